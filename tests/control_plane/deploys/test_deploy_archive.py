"""A deploy's archive (`control_plane.deploys.archive`): what it may hold, and each refusal
naming the member at fault."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from control_plane.deploys.archive import ArchiveLimits, ArchiveRefused, pack, unpack

LIMITS = ArchiveLimits(max_file_bytes=1000, max_files=10, max_total_bytes=None)


def archive_of(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def of_type(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def refusal(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], **kw: int
) -> ArchiveRefused:
    archive = archive_of(tmp_path / "a.tar.gz", members)
    target = tmp_path / "out"
    target.mkdir()
    limits = ArchiveLimits(
        kw.get("max_file_bytes", 1000), kw.get("max_files", 10), kw.get("max_total")
    )
    with pytest.raises(ArchiveRefused) as caught:
        unpack(archive, target, limits)
    return caught.value


def test_the_three_folders_are_unpacked_with_their_hashes(tmp_path: Path) -> None:
    dir_info = tarfile.TarInfo("./pb_public")
    dir_info.type = tarfile.DIRTYPE
    archive = archive_of(
        tmp_path / "a.tar.gz",
        [
            (dir_info, None),
            file("./pb_public/index.html", b"<h1>hi</h1>"),
            file("pb_hooks/main.pb.js", b"// hook"),
            file("pb_migrations/1_x.js", b"// m"),
        ],
    )
    target = tmp_path / "out"
    target.mkdir()
    contents = unpack(archive, target, LIMITS)
    assert contents.folders == {"pb_public", "pb_hooks", "pb_migrations"}
    assert (target / "pb_public/index.html").read_bytes() == b"<h1>hi</h1>"
    assert set(contents.manifest) == {
        "pb_public/index.html",
        "pb_hooks/main.pb.js",
        "pb_migrations/1_x.js",
    }
    assert contents.total_bytes == len(b"<h1>hi</h1>") + len(b"// hook") + len(b"// m")
    repacked = tmp_path / "b.tar.gz"
    size, digest = pack(target, ["pb_public", "pb_hooks"], repacked)
    assert size == repacked.stat().st_size and len(digest) == 64
    assert repacked.stat().st_mode & 0o777 == 0o600
    with tarfile.open(repacked) as tar:
        assert "pb_migrations/1_x.js" not in tar.getnames()
        assert "pb_public/index.html" in tar.getnames()


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("pb_data/data.db", "pb_hooks/"),
        ("README.md", "pb_hooks/"),
        ("/etc/passwd", "absolute"),
        ("pb_public/../pb_data/x", "`..`"),
        ("../outside", "`..`"),
        ("pb_public/.pf-upload-x", "reserved"),
    ],
)
def test_paths_outside_the_folders_are_refused(tmp_path: Path, name: str, said: str) -> None:
    refused = refusal(tmp_path, [file("pb_public/ok.txt"), file(name)])
    assert refused.status == 422
    assert said in refused.message
    assert name.lstrip("/").split("/")[-1] in refused.message or name in refused.message


@pytest.mark.parametrize(
    ("kind", "target"),
    [
        (tarfile.SYMTYPE, "/etc/passwd"),
        (tarfile.LNKTYPE, "pb_public/ok.txt"),
        (tarfile.CHRTYPE, ""),
        (tarfile.BLKTYPE, ""),
        (tarfile.FIFOTYPE, ""),
    ],
)
def test_links_and_special_files_are_refused(tmp_path: Path, kind: bytes, target: str) -> None:
    refused = refusal(tmp_path, [file("pb_public/ok.txt"), of_type("pb_public/odd", kind, target)])
    assert refused.status == 422 and "pb_public/odd" in refused.message


def test_a_member_named_twice_is_refused(tmp_path: Path) -> None:
    refused = refusal(tmp_path, [file("pb_public/a"), file("./pb_public/a")])
    assert "twice" in refused.message


def test_a_file_over_the_limit_is_413(tmp_path: Path) -> None:
    refused = refusal(tmp_path, [file("pb_public/big", b"x" * 11)], max_file_bytes=10)
    assert refused.status == 413 and "pb_public/big" in refused.message


def test_too_many_files_is_507(tmp_path: Path) -> None:
    members = [file(f"pb_public/{n}") for n in range(4)]
    assert refusal(tmp_path, members, max_files=3).status == 507


def test_more_than_the_quota_is_507(tmp_path: Path) -> None:
    members = [file("pb_public/a", b"x" * 6), file("pb_public/b", b"x" * 6)]
    refused = refusal(tmp_path, members, max_total=10)
    assert refused.status == 507 and "quota" in refused.message


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip at all")
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ArchiveRefused) as caught:
        unpack(junk, target, LIMITS)
    assert caught.value.status == 422
