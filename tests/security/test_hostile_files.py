"""A tenant's hook reaches for files that are not its own: another tenant's database and folder,
the control plane's database, key, backups, Litestream's and Caddy's state, the host's secrets
(by absolute path, as it would know them from the docs or from its own folder's path); and it
writes where it should not: the host's /usr, /etc and /tmp, the shared engine binary, another
tenant's folder. Every read finds nothing (the sandbox shows none of it) or is denied; every
write fails, except in the sandbox's private /tmp, which is not the host's."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.security.hostile import Hostile, Victim, litestream_config
from tests.support.server import ServeProcess

# What a hostile hook reads and lists, by absolute path: (label, target)
Target = Callable[[Path, Victim], Path]  # (the data dir, resolved; the victim) -> path
READS: list[tuple[str, Target]] = [
    ("victim-database", lambda data, victim: victim.instance.database),
    ("victim-database-wal", lambda data, victim: Path(f"{victim.instance.database}-wal")),
    ("victim-hook-folder", lambda data, victim: victim.instance.folder / "pb_hooks"),
    ("victim-log", lambda data, victim: victim.instance.folder / "output.log"),
    ("control-db", lambda data, victim: data / "control.db"),
    ("control-db-wal", lambda data, victim: data / "control.db-wal"),
    ("secret-key", lambda data, victim: data / "secret.key"),
    ("litestream-config", lambda data, victim: litestream_config(data, victim.instance.id)),
    ("litestream-log", lambda data, victim: data / "litestream" / "litestream.log"),
    ("serve-logs", lambda data, victim: next(data.parent.glob("serve-*.log"))),
    ("shadow", lambda data, victim: Path("/etc/shadow")),
    ("proc-1-root", lambda data, victim: Path("/proc/1/root/etc/shadow")),
]
LISTINGS: list[tuple[str, Target]] = [
    ("victim-folder", lambda data, victim: victim.instance.folder),
    ("victim-pb-data", lambda data, victim: victim.instance.folder / "pb_data"),
    ("backups", lambda data, victim: data / "backups"),
    ("backup-work", lambda data, victim: data / "backup-work"),
    ("trash", lambda data, victim: data / "trash"),
    ("litestream", lambda data, victim: data / "litestream"),
    ("caddy-state", lambda data, victim: data / "caddy"),
    ("run", lambda data, victim: data / "run"),
    ("root-home", lambda data, victim: Path("/root")),
    ("host-sys", lambda data, victim: Path("/sys/fs/cgroup")),
]

# Targets the host may not have (yet): Caddy's state without Caddy, folders made on first use.
# Every other one exists on the host: each attack goes for something that is there.
NOT_ON_THE_HOST = {"proc-1-root", "caddy-state", "backup-work", "trash"}


@pytest.mark.parametrize(("label", "target"), READS, ids=[label for label, _ in READS])
def test_reading_a_file_outside_its_folder_finds_nothing(
    hostile: Hostile, victim: Victim, serve: ServeProcess, label: str, target: Target
) -> None:
    path = target(serve.data_dir.resolve(), victim)
    assert label in NOT_ON_THE_HOST or path.exists()
    got = hostile.read(path)
    assert got.refused, f"the hook read {path}: {got}"
    assert victim.secret not in got.text and victim.env_secret not in got.text


@pytest.mark.parametrize(("label", "target"), LISTINGS, ids=[label for label, _ in LISTINGS])
def test_listing_a_folder_outside_its_own_finds_nothing(
    hostile: Hostile, victim: Victim, serve: ServeProcess, label: str, target: Target
) -> None:
    path = target(serve.data_dir.resolve(), victim)
    assert label in NOT_ON_THE_HOST or path.is_dir()
    got = hostile.listdir(path)
    assert got.refused, f"the hook listed {path}: {got}"


def test_the_folders_on_the_way_to_its_own_hold_nothing_else(
    hostile: Hostile, serve: ServeProcess
) -> None:
    """The paths to its own folder and to its engine exist in the sandbox (every path the
    engine is given stays true), and those folders hold nothing beside them."""
    data = serve.data_dir.resolve()
    engine = engine_binary(serve).parent
    expected = {
        data.parent: [data.name],
        data: ["engines", "instances"],
        data / "instances": [hostile.instance.id],
        data / "engines": ["pocketbase"],
        engine.parent: [engine.name],
    }
    for folder, names in expected.items():
        got = hostile.listdir(folder)
        assert got.ok, got
        assert json.loads(got.text) == names, folder
    own = hostile.listdir(hostile.instance.folder)
    assert own.ok and "pb_data" in json.loads(own.text)
    hostile.assert_alive()


def test_the_victims_secrets_are_still_the_victims(victim: Victim) -> None:
    """The secret is really where the attacks looked (the attacks above proved something)."""
    assert victim.secret.encode() in victim.database_bytes()
    assert victim.secrets_seen() == [victim.secret]


def writes(data: Path, victim: Victim, engine_binary: Path) -> list[tuple[str, Path]]:
    mark = secrets.token_hex(4)
    return [
        ("usr", Path(f"/usr/pf-attack-{mark}")),
        ("usr-bin", Path(f"/usr/bin/pf-attack-{mark}")),
        ("etc", Path(f"/etc/pf-attack-{mark}")),
        ("etc-resolv", Path("/etc/resolv.conf")),
        ("root", Path(f"/pf-attack-{mark}")),
        ("engine-binary", engine_binary),
        ("engine-folder", engine_binary.parent / f"pf-attack-{mark}"),
        ("victim-hook", victim.instance.folder / "pb_hooks" / f"pf-attack-{mark}.pb.js"),
        ("victim-database", victim.instance.database),
        ("control-db", data / "control.db"),
        ("data-dir", data / f"pf-attack-{mark}"),
        ("instances", data / "instances" / f"pf-attack-{mark}"),
        ("proc-sysrq", Path("/proc/sysrq-trigger")),
        ("proc-sys", Path("/proc/sys/kernel/hostname")),
    ]


def engine_binary(serve: ServeProcess) -> Path:
    found = sorted((serve.data_dir / "engines" / "pocketbase").glob("*/pocketbase"))
    assert found, "no PocketBase installed"
    return found[0].resolve()


def test_writing_outside_its_folder_fails_and_changes_nothing(
    hostile: Hostile, victim: Victim, serve: ServeProcess
) -> None:
    binary = engine_binary(serve)
    before = binary.read_bytes()
    for label, path in writes(serve.data_dir.resolve(), victim, binary):
        existed = path.exists()
        got = hostile.write(path, "#!/bin/sh\necho owned\n")
        assert got.refused, f"{label}: the hook wrote {path}: {got}"
        assert path.exists() == existed, f"{label}: {path} appeared on the host"
    assert binary.read_bytes() == before
    # the victim's database may change meanwhile by its own engine's or Litestream's
    # checkpoint (not byte-stable): it must still be a database, unwritten by the hook,
    # holding what its owner reads through its API
    database = victim.instance.database.read_bytes()
    assert database.startswith(b"SQLite format 3\x00") and b"echo owned" not in database
    assert victim.secrets_seen() == [victim.secret]
    hostile.assert_alive()


def test_its_tmp_is_private_to_it(hostile: Hostile) -> None:
    name = f"pf-attack-{secrets.token_hex(4)}"
    for folder in ("/tmp", "/dev/shm", "/var/tmp"):
        got = hostile.write(f"{folder}/{name}", "left for the host")
        if got.ok:  # written in the sandbox's own folder: not the host's
            assert got.text == "left for the host"
            assert not (Path(folder) / name).exists(), f"{folder} is the host's"
        else:
            assert got.refused, got
    assert hostile.read(f"/tmp/{name}").ok  # still there for itself
    hostile.assert_alive()


def test_its_own_folder_is_writable(hostile: Hostile) -> None:
    """The one writable place: what the attacks above could not do, it does at home."""
    path = hostile.instance.folder / "pb_public" / "index.html"
    got = hostile.write(path, "<h1>mine</h1>")
    assert got.ok and got.text == "<h1>mine</h1>", got
    assert path.read_text() == "<h1>mine</h1>"
    assert path.stat().st_uid == hostile.instance.uid
