"""`control_plane.safe_fs` against a real filesystem, with the tricks a hostile tenant has:
symbolic links on every component, hard links, FIFOs, device nodes, foreign owners, and
directories swapped in the middle of a walk (done from the walk's own `prune` hook, so the swap
lands exactly between the listing and the open)."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane import safe_fs

TENANT = 200_777  # an instance-like uid
OTHER = 200_778


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A tenant's folder (owned by TENANT) with a file and a subfolder, and a descriptor of it."""
    root = tmp_path / "instance"
    (root / "pb_public" / "deep").mkdir(parents=True)
    (root / "pb_public" / "index.html").write_text("hello")
    (root / "pb_public" / "deep" / "a.txt").write_text("deep")
    (tmp_path / "secret").write_text("another tenant's secret")
    for path in (root, *root.rglob("*")):
        os.lchown(path, TENANT, TENANT)
    fd = safe_fs.open_anchor(root)
    try:
        yield root, fd
    finally:
        os.close(fd)


def read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def test_relative_paths_must_be_plain() -> None:
    assert safe_fs.components("a/b/c") == ["a", "b", "c"]
    for bad in ("", "/etc/passwd", "a/../b", "..", "./a", "a//b", "a/", "a\0b"):
        with pytest.raises(safe_fs.Refused):
            safe_fs.components(bad)


def test_a_link_on_any_component_is_refused(folder: tuple[Path, int], tmp_path: Path) -> None:
    root, fd = folder
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "deep").mkdir(parents=True)
    (elsewhere / "deep" / "a.txt").write_text("not yours")
    os.symlink(elsewhere, root / "linked")
    os.symlink(elsewhere / "deep", root / "pb_public" / "linkdir")

    with pytest.raises(safe_fs.Refused, match="linked: a symbolic link"):
        safe_fs.open_dir(fd, "linked/deep")
    with pytest.raises(safe_fs.Refused, match="pb_public/linkdir"):
        safe_fs.open_own_file_at(fd, "pb_public/linkdir/a.txt", TENANT)
    with pytest.raises(FileNotFoundError):
        safe_fs.open_dir(fd, "pb_public/nothing")
    assert read_all(safe_fs.open_own_file_at(fd, "pb_public/deep/a.txt", TENANT)) == b"deep"
    # lstat never follows either: the link itself
    info = safe_fs.lstat_at(fd, "pb_public/linkdir")
    assert info is not None and stat.S_ISLNK(info.st_mode)
    assert safe_fs.lstat_at(fd, "pb_public/missing") is None
    with pytest.raises(safe_fs.Refused):
        safe_fs.lstat_at(fd, "linked/deep/a.txt")


def test_only_own_regular_files_with_one_link_are_opened(
    folder: tuple[Path, int], tmp_path: Path
) -> None:
    root, fd = folder
    public = root / "pb_public"
    public_fd = safe_fs.open_dir(fd, "pb_public")
    try:
        os.symlink(tmp_path / "secret", public / "shadow")
        os.symlink("/etc/shadow", public / "etc-shadow")
        os.mkfifo(public / "fifo")
        os.link(tmp_path / "secret", public / "hardlink")
        os.mknod(public / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        (public / "theirs.txt").write_text("theirs")
        os.chown(public / "theirs.txt", OTHER, OTHER)
        (public / "mine.txt").write_text("mine")
        os.chown(public / "mine.txt", TENANT, TENANT)

        expected = {
            "shadow": "a symbolic link",
            "etc-shadow": "a symbolic link",
            "fifo": "a FIFO",  # and nothing blocks: a FIFO is never opened
            "hardlink": "owned by uid 0",
            "null": "a device node",
            "theirs.txt": f"owned by uid {OTHER}",
        }
        for name, why in expected.items():
            with pytest.raises(safe_fs.Refused, match=why):
                safe_fs.open_own_file(public_fd, name, TENANT)
        os.chown(public / "hardlink", TENANT, TENANT)  # even the tenant's own, when linked twice
        with pytest.raises(safe_fs.Refused, match="2 hard links"):
            safe_fs.open_own_file(public_fd, "hardlink", TENANT)
        assert read_all(safe_fs.open_own_file(public_fd, "mine.txt", TENANT)) == b"mine"
        with pytest.raises(FileNotFoundError):
            safe_fs.open_own_file(public_fd, "missing", TENANT)
    finally:
        os.close(public_fd)


def test_a_walk_lists_links_but_never_follows_them(
    folder: tuple[Path, int], tmp_path: Path
) -> None:
    root, fd = folder
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x").write_text("outside")
    os.symlink(tmp_path / "outside", root / "pb_public" / "out")
    seen = {entry.rel: entry for entry in safe_fs.walk(fd)}
    assert set(seen) == {
        "pb_public",
        "pb_public/deep",
        "pb_public/deep/a.txt",
        "pb_public/index.html",
        "pb_public/out",
    }
    assert stat.S_ISLNK(seen["pb_public/out"].info.st_mode) and not seen["pb_public/out"].is_dir
    pruned = [e.rel for e in safe_fs.walk(fd, prune=lambda rel: rel == "pb_public/deep")]
    assert "pb_public/deep" in pruned and "pb_public/deep/a.txt" not in pruned


def test_a_directory_swapped_during_the_walk_is_not_entered(
    folder: tuple[Path, int], tmp_path: Path
) -> None:
    root, fd = folder
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "stolen.txt").write_text("stolen")
    (root / "spare").mkdir()
    (root / "spare" / "other.txt").write_text("other")

    def swap_for_a_link(rel: str) -> bool:
        if rel == "pb_public/deep":  # listed as a folder; a link by the time it is opened
            os.rename(root / "pb_public" / "deep", root / "moved")
            os.symlink(tmp_path / "foreign", root / "pb_public" / "deep")
        return False

    skipped = safe_fs.Skipped()
    rels = [e.rel for e in safe_fs.walk(fd, prune=swap_for_a_link, skipped=skipped)]
    assert not any("stolen" in rel for rel in rels)
    assert "pb_public/deep" in skipped.entries

    def swap_for_another_folder(rel: str) -> bool:
        if rel == "pb_public":  # replaced by another folder between listing and open
            os.rename(root / "pb_public", root / "old_public")
            os.rename(root / "spare", root / "pb_public")
        return False

    skipped = safe_fs.Skipped()
    rels = [e.rel for e in safe_fs.walk(fd, prune=swap_for_another_folder, skipped=skipped)]
    assert skipped.entries.get("pb_public") == "replaced while it was read"
    assert "pb_public/other.txt" not in rels


def test_a_walk_stays_on_its_filesystem_and_depth(folder: tuple[Path, int], tmp_path: Path) -> None:
    root, fd = folder
    mount = root / "mounted"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mount / "elsewhere.txt").write_text("x")
        deep = root
        for i in range(safe_fs.MAX_DEPTH + 3):
            deep = deep / f"d{i}"
        deep.mkdir(parents=True)
        skipped = safe_fs.Skipped()
        rels = [e.rel for e in safe_fs.walk(fd, skipped=skipped)]
        assert "mounted/elsewhere.txt" not in rels
        assert skipped.entries["mounted"] == "another filesystem"
        assert any("deeper than" in why for why in skipped.entries.values())
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_creating_never_goes_through_a_link(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", staged / "pb_data")
    os.symlink(tmp_path / "target" / "file", staged / "file")
    fd = safe_fs.open_anchor(staged)
    try:
        with pytest.raises(safe_fs.Refused, match="pb_data"):
            safe_fs.make_dirs(fd, "pb_data/storage")
        with pytest.raises(FileExistsError):
            os.close(safe_fs.create_file(fd, "file"))
        assert not (tmp_path / "target" / "file").exists()
        assert os.listdir(tmp_path / "target") == []

        made = safe_fs.make_dirs(fd, "pb_public/a/b", uid=TENANT)
        try:
            new = safe_fs.create_file(made, "index.html", uid=TENANT)
            os.write(new, b"x")
            os.close(new)
        finally:
            os.close(made)
        info = (staged / "pb_public" / "a" / "b" / "index.html").stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (TENANT, 0o600)
        folder_info = (staged / "pb_public" / "a").stat()
        assert (folder_info.st_uid, stat.S_IMODE(folder_info.st_mode)) == (TENANT, 0o700)
    finally:
        os.close(fd)


def test_copy_keeps_content_and_time_and_refuses_links(
    folder: tuple[Path, int], tmp_path: Path
) -> None:
    root, fd = folder
    target = tmp_path / "copy"
    target.mkdir()
    os.utime(root / "pb_public" / "index.html", ns=(1_000_000_000, 2_000_000_000))
    os.symlink(tmp_path / "secret", root / "pb_public" / "link")
    public = safe_fs.open_dir(fd, "pb_public")
    target_fd = safe_fs.open_anchor(target)
    try:
        safe_fs.copy_own_file(public, "index.html", target_fd, TENANT, owner=TENANT)
        with pytest.raises(safe_fs.Refused):
            safe_fs.copy_own_file(public, "link", target_fd, TENANT)
    finally:
        os.close(public)
        os.close(target_fd)
    copied = target / "index.html"
    assert copied.read_text() == "hello"
    info = copied.stat()
    assert info.st_mtime_ns == 2_000_000_000 and info.st_uid == TENANT
    assert sorted(os.listdir(target)) == ["index.html"]


def test_hand_over_gives_a_private_tree_to_its_owner(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    (staged / "pb_data" / "storage").mkdir(parents=True)
    (staged / "pb_data" / "data.db").write_bytes(b"db")
    (staged / "pb_data" / "storage" / "f").write_bytes(b"f")
    os.chmod(staged / "pb_data" / "data.db", 0o644)
    fd = safe_fs.open_anchor(staged)
    try:
        safe_fs.hand_over(fd, TENANT)
        for path in (staged, *staged.rglob("*")):
            info = path.lstat()
            want = 0o700 if path.is_dir() else 0o600
            assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (TENANT,) * 2 + (
                want,
            ), path
        os.symlink("/etc/shadow", staged / "pb_data" / "sneaked")
        with pytest.raises(safe_fs.Refused, match="symbolic link"):
            safe_fs.hand_over(fd, TENANT)
        assert os.stat("/etc/shadow").st_uid == 0  # never chowned through the link
    finally:
        os.close(fd)


def test_anchors_are_not_links(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(OSError):
        os.close(safe_fs.open_anchor(tmp_path / "link"))
    os.close(safe_fs.open_anchor(tmp_path / "real"))


def test_reclaim_gives_back_only_the_inode_named_when_it_is_a_lone_regular_file(
    folder: tuple[Path, int], tmp_path: Path
) -> None:
    root, fd = folder
    public = root / "pb_public"
    given = public / "data.db-wal"
    given.write_bytes(b"wal")
    os.chown(given, OTHER, OTHER)  # as root's SQLite does (see backups.replication)
    inode = (given.stat().st_dev, given.stat().st_ino)

    assert not safe_fs.reclaim(fd, "pb_public/data.db-wal", TENANT, (inode[0], inode[1] + 1))
    assert given.stat().st_uid == OTHER  # another inode than the one named: untouched
    os.link(given, tmp_path / "second-link")
    assert not safe_fs.reclaim(fd, "pb_public/data.db-wal", TENANT, inode)
    assert given.stat().st_uid == OTHER  # linked twice: maybe someone else's, untouched
    os.unlink(tmp_path / "second-link")
    assert safe_fs.reclaim(fd, "pb_public/data.db-wal", TENANT, inode)
    assert (given.stat().st_uid, given.stat().st_gid) == (TENANT, TENANT)
    assert safe_fs.reclaim(fd, "pb_public/data.db-wal", TENANT, inode)  # already the owner's

    shadow = os.stat("/etc/shadow")
    os.symlink("/etc/shadow", public / "shadow")
    assert not safe_fs.reclaim(fd, "pb_public/shadow", TENANT, (shadow.st_dev, shadow.st_ino))
    os.symlink(public, root / "linked")
    with pytest.raises(safe_fs.Refused, match="linked: a symbolic link"):
        safe_fs.reclaim(fd, "linked/data.db-wal", TENANT, inode)
    assert os.stat("/etc/shadow").st_uid == 0
    assert not safe_fs.reclaim(fd, "pb_public/missing", TENANT, inode)
    assert not safe_fs.reclaim(fd, "nowhere/missing", TENANT, inode)
