"""`extract_verified` against archives built to escape their folder: only regular files with
plain relative names are written, each as a new file below the staging folder; anything else
refuses the archive without a byte written outside it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from control_plane.backups.archive import ArchiveError, extract_verified


def manifest(files: dict[str, bytes]) -> bytes:
    return json.dumps(
        {
            "format": 1,
            "instance": {"id": "i", "name": "app"},
            "engine": {"name": "pocketbase", "version": "0.30.0"},
            "created": "2026-12-01T00:00:00+00:00",
            "databases": [],
            "files": [
                {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                for p, d in files.items()
            ],
        }
    ).encode()


def archive(path: Path, members: list[tarfile.TarInfo], listed: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            data = listed.get(member.name, b"")
            member.size = len(data) if member.isreg() else 0
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
        body = manifest(listed)
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return path


def regular(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_a_plain_archive_is_extracted(tmp_path: Path) -> None:
    files = {"pb_public/index.html": b"hi", "pb_hooks/main.pb.js": b"// hook"}
    path = archive(tmp_path / "a.tar.gz", [regular(n) for n in files], files)
    extract_verified(path, tmp_path / "new")
    assert (tmp_path / "new" / "pb_public" / "index.html").read_bytes() == b"hi"
    assert (tmp_path / "new" / "pb_public" / "index.html").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (special("pb_public/link", tarfile.SYMTYPE, "/etc/shadow"), "not a regular file"),
        (special("pb_public/hard", tarfile.LNKTYPE, "pb_public/x"), "not a regular file"),
        (special("pb_public/fifo", tarfile.FIFOTYPE), "not a regular file"),
        (special("pb_public/dev", tarfile.CHRTYPE), "not a regular file"),
        (regular("../escaped"), "unsafe name"),
        (regular("/tmp/escaped-absolute"), "unsafe name"),
        (regular("pb_public/../../escaped"), "unsafe name"),
    ],
)
def test_members_that_are_not_plain_files_refuse_the_archive(
    tmp_path: Path, member: tarfile.TarInfo, why: str
) -> None:
    listed = {member.name: b"payload"} if member.isreg() else {}
    path = archive(tmp_path / "a.tar.gz", [member], listed)
    dest = tmp_path / "stage" / "new"
    dest.parent.mkdir()
    with pytest.raises(ArchiveError, match=why):
        extract_verified(path, dest)
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-absolute").exists()
    assert sorted(os.listdir(tmp_path / "stage")) == ["new"]


def test_a_member_cannot_write_through_a_folder_an_earlier_member_made_a_link(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [
        special("pb_public", tarfile.SYMTYPE, str(outside)),
        regular("pb_public/index.html"),
    ]
    path = archive(tmp_path / "a.tar.gz", members, {"pb_public/index.html": b"x"})
    with pytest.raises(ArchiveError):
        extract_verified(path, tmp_path / "new")
    assert os.listdir(outside) == []


def test_a_duplicate_member_refuses_the_archive(tmp_path: Path) -> None:
    files = {"pb_public/a": b"1"}
    path = archive(tmp_path / "a.tar.gz", [regular("pb_public/a"), regular("pb_public/a")], files)
    with pytest.raises(ArchiveError, match="cannot be extracted"):
        extract_verified(path, tmp_path / "new")
