"""The `/etc` of sandboxes: copies of the host's few files, rebuilt when the host's change."""

from __future__ import annotations

import os
import time
from pathlib import Path

from control_plane.drivers.sandbox_etc import SandboxEtc


def host_etc(root: Path) -> Path:
    etc = root / "etc"
    (etc / "ssl" / "certs").mkdir(parents=True)
    (etc / "resolv.conf").write_text("nameserver 10.0.0.1\n")
    (etc / "shadow").write_text("root:secret\n")  # not one of the files copied
    (root / "zoneinfo").write_text("UTC\n")
    (etc / "localtime").symlink_to(root / "zoneinfo")
    (etc / "ssl" / "certs" / "ca.pem").symlink_to("/usr/share/ca-certificates/x/ca.crt")
    return etc


def test_the_copies_are_readable_keep_links_and_leave_the_rest(tmp_path: Path) -> None:
    etc = SandboxEtc(tmp_path / "sandbox", host_etc(tmp_path)).current()

    assert (etc / "resolv.conf").read_text() == "nameserver 10.0.0.1\n"
    assert not (etc / "localtime").is_symlink()  # a top-level link is followed
    assert (etc / "localtime").read_text() == "UTC\n"
    assert os.readlink(etc / "ssl" / "certs" / "ca.pem") == "/usr/share/ca-certificates/x/ca.crt"
    assert not (etc / "shadow").exists()
    assert (etc / "resolv.conf").stat().st_mode & 0o777 == 0o644
    assert etc.stat().st_mode & 0o777 == 0o755


def test_a_changed_host_file_makes_a_new_generation_and_old_ones_go(tmp_path: Path) -> None:
    source = host_etc(tmp_path)
    keeper = SandboxEtc(tmp_path / "sandbox", source)
    first = keeper.current()
    assert keeper.current() == first  # nothing changed: the same folder

    generations = [first]
    for server in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):
        time.sleep(0.01)
        (source / "resolv.conf").write_text(f"nameserver {server}\n")
        generations.append(keeper.current())
        assert (generations[-1] / "resolv.conf").read_text() == f"nameserver {server}\n"

    assert len(set(generations)) == 4
    left = sorted(p.name for p in (tmp_path / "sandbox").iterdir())
    assert left == sorted(p.name for p in generations[-2:])  # the current one and the one before
