"""`control_plane.files.tree.InstanceFiles` on a real folder (a tmp folder as the instance's root,
a test uid as its owner), with what a hostile tenant can leave in it: symbolic links on every
component, FIFOs, hard links, files of another owner; and every limit (file size, number of
files, disk quota). Every refusal leaves the folder as it was."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from control_plane.files.tree import (
    Exists,
    FileLimits,
    FileRefused,
    InstanceFiles,
    LinkOrSpecial,
    NotADir,
    NotAFile,
    NotEmpty,
    NotThere,
    OverQuota,
    PathRefused,
    TooLarge,
)

TENANT = 200_951  # an instance-like uid
OTHER = 200_952
LIMITS = FileLimits(max_file_bytes=1000, max_files=50, quota_bytes=None)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An instance folder as the driver leaves it: the four folders (0700), the tenant's."""
    root = tmp_path / "instance"
    root.mkdir(mode=0o700)
    for name in ("pb_data", "pb_hooks", "pb_migrations", "pb_public"):
        (root / name).mkdir(mode=0o700)
    (root / "pb_data" / "data.db").write_bytes(b"the database")
    (root / "pb_public" / "index.html").write_bytes(b"<h1>old</h1>")
    (root / "pb_public" / "assets").mkdir()
    (root / "pb_public" / "assets" / "app.js").write_bytes(b"console.log(1)")
    for path in (root, *root.rglob("*")):
        os.lchown(path, TENANT, TENANT)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Somewhere a link may point: another tenant's files."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"another tenant's secret")
    return folder


def files_of(root: Path, **limits: int | None) -> InstanceFiles:
    return InstanceFiles(root, TENANT, FileLimits(**{**LIMITS.__dict__, **limits}))


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry below `root` (links not followed): its mode and, for a file, its bytes."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        found[str(path.relative_to(root))] = (info.st_mode, content)
    return found


def refused_alike(root: Path, kind: type[FileRefused], action: Callable[[], object]) -> None:
    before = snapshot(root)
    with pytest.raises(kind):
        action()
    assert snapshot(root) == before


# ----- reading and writing


def test_a_write_is_read_back_owned_by_the_instance(root: Path) -> None:
    files = files_of(root)
    entry = files.write("pb_public/docs/guide/intro.html", b"<p>hi</p>")
    assert (entry.path, entry.kind, entry.size) == ("pb_public/docs/guide/intro.html", "file", 9)
    with files.open_read("pb_public/docs/guide/intro.html") as stream:
        assert stream.read() == b"<p>hi</p>"
    written = root / "pb_public" / "docs" / "guide" / "intro.html"
    info = written.lstat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (TENANT, TENANT, 0o644)
    for folder in (written.parent, written.parent.parent):
        info = folder.lstat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (TENANT, 0o755)


def test_a_missing_code_folder_is_made_as_the_driver_makes_it(root: Path) -> None:
    (root / "pb_hooks").rmdir()
    files_of(root).write("pb_hooks/main.pb.js", b"// hook")
    info = (root / "pb_hooks").lstat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (TENANT, 0o700)


def test_a_replace_is_atomic_and_leaves_no_temporary_file(root: Path) -> None:
    files = files_of(root)
    target = root / "pb_public" / "index.html"
    reader = target.open("rb")  # opened before the replace: keeps the old file whole
    old_inode = target.stat().st_ino
    with files.open_upload("pb_public/index.html") as upload:
        upload.write_at(0, b"<h1>new")
        upload.write_at(7, b"</h1>")
        # until the commit, the old file is there and the temporary one is not listed
        assert target.read_bytes() == b"<h1>old</h1>"
        assert [e.name for e in files.list("pb_public")] == ["assets", "index.html"]
        assert any(name.startswith(".pf-upload-") for name in os.listdir(root / "pb_public"))
        entry = upload.commit()
    assert upload.replaced and entry.size == 12
    assert target.read_bytes() == b"<h1>new</h1>"
    assert target.stat().st_ino != old_inode
    assert reader.read() == b"<h1>old</h1>"
    reader.close()
    assert sorted(os.listdir(root / "pb_public")) == ["assets", "index.html"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_an_aborted_upload_changes_nothing(root: Path) -> None:
    before = snapshot(root)
    upload = files_of(root).open_upload("pb_public/index.html")
    upload.write_at(0, b"half of it")
    upload.abort()
    upload.abort()  # idempotent
    assert snapshot(root) == before
    with pytest.raises(NotThere):
        upload.write_at(0, b"more")


def test_listings_show_folders_and_own_files_only(root: Path, outside: Path) -> None:
    files = files_of(root)
    assert [e.path for e in files.list("")] == ["pb_hooks", "pb_migrations", "pb_public"]
    (root / "pb_migrations").rmdir()
    assert [e.path for e in files.list("")] == ["pb_hooks", "pb_public"]
    os.symlink(outside, root / "pb_public" / "link")
    os.mkfifo(root / "pb_public" / "fifo")
    (root / "pb_public" / ".pf-upload-0123456789abcdef").write_bytes(b"temporary")
    listed = files.list("pb_public/")
    assert [(e.path, e.kind) for e in listed] == [
        ("pb_public/assets", "dir"),
        ("pb_public/index.html", "file"),
    ]
    assert files.list("pb_public/assets")[0].size == len(b"console.log(1)")
    assert files.stat("pb_public/assets").kind == "dir"


def test_folders_and_files_are_not_taken_for_each_other(root: Path) -> None:
    files = files_of(root)
    refused_alike(root, NotAFile, lambda: files.open_read("pb_public/assets"))
    refused_alike(root, NotAFile, lambda: files.write("pb_public/assets", b"x"))
    refused_alike(root, NotAFile, lambda: files.write("pb_public", b"x"))
    refused_alike(root, NotADir, lambda: files.list("pb_public/index.html"))
    refused_alike(root, NotADir, lambda: files.write("pb_public/index.html/x", b"x"))
    refused_alike(root, NotThere, lambda: files.open_read("pb_public/nothing.html"))
    refused_alike(root, NotThere, lambda: files.list("pb_public/nothing"))


def test_an_instance_without_a_folder_has_nothing(tmp_path: Path) -> None:
    with pytest.raises(NotThere, match="no folder"):
        files_of(tmp_path / "never-started").list("")


# ----- paths


BAD_PATHS = [
    "",
    "/etc/passwd",
    "/pb_public/index.html",
    "..",
    "../../etc/passwd",
    "pb_public/../pb_data/data.db",
    "pb_public/./index.html",
    "pb_public//index.html",
    "pb_public/a\0b",
    "pb_public/a\nb",
    "pb_public/" + "a" * 256,
    "pb_public/" + "é" * 200,  # 200 characters, 400 bytes of UTF-8
    "pb_public/" + "/".join(["d"] * 600),
    "pb_public/.pf-upload-0123456789abcdef",
    "pb_public/\udcff",  # not UTF-8
    "pb_data/data.db",
    "pb_data",
    "output.log",
    "secret.key",
    "other/file.txt",
    "PB_PUBLIC/index.html",
]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_paths_outside_the_rules_are_refused_by_every_operation(root: Path, bad: str) -> None:
    files = files_of(root)
    for action in (
        lambda: files.open_read(bad),
        lambda: files.write(bad, b"pwned"),
        lambda: files.open_upload(bad),
        lambda: files.mkdir(bad),
        lambda: files.delete(bad, recursive=True),
        lambda: files.move(bad, "pb_public/moved"),
        lambda: files.move("pb_public/index.html", bad),
        lambda: files.stat(bad),
    ):
        refused_alike(root, PathRefused, action)
    if bad:  # "" lists the code folders
        refused_alike(root, PathRefused, lambda: files.list(bad))


def test_the_code_folders_are_listed_by_an_empty_path_only(root: Path) -> None:
    files = files_of(root)
    assert len(files.list("")) == 3
    refused_alike(root, PathRefused, lambda: files.list("/"))
    refused_alike(root, PathRefused, lambda: files.list("pb_data/"))


def test_the_refusal_of_a_path_never_repeats_it(root: Path) -> None:
    with pytest.raises(PathRefused) as refused:
        files_of(root).write("pb_public/../../etc/shadow", b"x")
    assert "shadow" not in refused.value.message


def test_code_folders_themselves_are_neither_deleted_nor_moved(root: Path) -> None:
    files = files_of(root)
    refused_alike(root, PathRefused, lambda: files.delete("pb_public", recursive=True))
    refused_alike(root, PathRefused, lambda: files.move("pb_hooks", "pb_public/hooks"))
    refused_alike(root, PathRefused, lambda: files.move("pb_public/assets", "pb_hooks"))


# ----- links and special files


def test_a_symlink_on_any_component_is_never_followed(root: Path, outside: Path) -> None:
    os.symlink(outside, root / "pb_public" / "link")
    os.symlink(outside / "secret.txt", root / "pb_public" / "file-link")
    files = files_of(root)
    for action in (
        lambda: files.open_read("pb_public/link/secret.txt"),
        lambda: files.write("pb_public/link/secret.txt", b"pwned"),
        lambda: files.write("pb_public/link/new.txt", b"pwned"),
        lambda: files.list("pb_public/link"),
        lambda: files.mkdir("pb_public/link/sub"),
        lambda: files.delete("pb_public/link/secret.txt"),
        lambda: files.move("pb_public/index.html", "pb_public/link/index.html"),
        lambda: files.move("pb_public/link/secret.txt", "pb_public/stolen.txt"),
        lambda: files.open_read("pb_public/file-link"),
        lambda: files.write("pb_public/file-link", b"pwned"),
        lambda: files.move("pb_public/file-link", "pb_public/moved"),
        lambda: files.move("pb_public/index.html", "pb_public/file-link"),
        lambda: files.stat("pb_public/file-link"),
    ):
        before = snapshot(outside)
        refused_alike(root, LinkOrSpecial, action)
        assert snapshot(outside) == before


def test_a_code_folder_that_is_a_symlink_is_refused(root: Path, outside: Path) -> None:
    (root / "pb_hooks").rmdir()
    os.symlink(outside, root / "pb_hooks")
    files = files_of(root)
    for action in (
        lambda: files.open_read("pb_hooks/secret.txt"),
        lambda: files.write("pb_hooks/main.pb.js", b"pwned"),
        lambda: files.list("pb_hooks"),
        lambda: files.mkdir("pb_hooks/sub"),
    ):
        refused_alike(root, LinkOrSpecial, action)
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert [e.path for e in files.list("")] == ["pb_migrations", "pb_public"]


def test_a_fifo_is_never_opened(root: Path) -> None:
    os.mkfifo(root / "pb_public" / "pipe")  # opening it for reading would block forever
    files = files_of(root)
    refused_alike(root, LinkOrSpecial, lambda: files.open_read("pb_public/pipe"))
    refused_alike(root, LinkOrSpecial, lambda: files.write("pb_public/pipe", b"x"))
    refused_alike(root, LinkOrSpecial, lambda: files.write("pb_public/pipe/x", b"x"))
    refused_alike(root, LinkOrSpecial, lambda: files.list("pb_public/pipe"))


def test_hard_links_and_files_of_another_owner_are_refused(root: Path) -> None:
    os.link(root / "pb_data" / "data.db", root / "pb_public" / "db-copy")
    foreign = root / "pb_public" / "foreign.txt"
    foreign.write_bytes(b"root's")
    os.chown(foreign, OTHER, OTHER)
    files = files_of(root)
    for rel in ("pb_public/db-copy", "pb_public/foreign.txt"):
        refused_alike(root, LinkOrSpecial, lambda rel=rel: files.open_read(rel))
        refused_alike(root, LinkOrSpecial, lambda rel=rel: files.write(rel, b"pwned"))
        refused_alike(root, LinkOrSpecial, lambda rel=rel: files.move(rel, "pb_public/m"))
    assert (root / "pb_data" / "data.db").read_bytes() == b"the database"


def test_delete_removes_a_link_itself_never_what_it_points_to(root: Path, outside: Path) -> None:
    os.symlink(outside / "secret.txt", root / "pb_public" / "file-link")
    folder = root / "pb_public" / "assets"
    os.symlink(outside, folder / "dir-link")
    os.mkfifo(folder / "pipe")
    files = files_of(root)
    files.delete("pb_public/file-link")
    files.delete("pb_public/assets", recursive=True)
    assert sorted(os.listdir(root / "pb_public")) == ["index.html"]
    assert (outside / "secret.txt").read_bytes() == b"another tenant's secret"


# ----- deleting, making folders, moving


def test_delete_of_files_and_folders(root: Path) -> None:
    files = files_of(root)
    refused_alike(root, NotEmpty, lambda: files.delete("pb_public/assets"))
    files.delete("pb_public/assets/app.js")
    files.delete("pb_public/assets")
    files.mkdir("pb_public/a/b/c")
    files.write("pb_public/a/b/c/d.txt", b"deep")
    files.delete("pb_public/a", recursive=True)
    assert sorted(os.listdir(root / "pb_public")) == ["index.html"]
    refused_alike(root, NotThere, lambda: files.delete("pb_public/a"))


def test_mkdir_makes_the_folders_on_the_way_once(root: Path) -> None:
    files = files_of(root)
    entry = files.mkdir("pb_migrations/one/two")
    assert (entry.path, entry.kind, entry.size) == ("pb_migrations/one/two", "dir", 0)
    info = (root / "pb_migrations" / "one" / "two").lstat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (TENANT, 0o755)
    refused_alike(root, Exists, lambda: files.mkdir("pb_migrations/one/two"))
    refused_alike(root, Exists, lambda: files.mkdir("pb_public/index.html"))
    refused_alike(root, NotADir, lambda: files.mkdir("pb_public/index.html/sub"))


def test_move_renames_files_and_folders(root: Path) -> None:
    files = files_of(root)
    moved = files.move("pb_public/index.html", "pb_public/assets/home.html")
    assert (moved.path, moved.size) == ("pb_public/assets/home.html", len(b"<h1>old</h1>"))
    files.move("pb_public/assets", "pb_hooks/assets")
    assert sorted(os.listdir(root / "pb_hooks" / "assets")) == ["app.js", "home.html"]
    files.write("pb_public/index.html", b"new home")
    files.move("pb_public/index.html", "pb_hooks/assets/home.html")  # replaces a file
    assert (root / "pb_hooks" / "assets" / "home.html").read_bytes() == b"new home"
    refused_alike(root, NotThere, lambda: files.move("pb_public/nothing", "pb_public/x"))
    refused_alike(root, NotThere, lambda: files.move("pb_hooks/assets", "pb_public/no/where"))
    refused_alike(root, PathRefused, lambda: files.move("pb_hooks/assets", "pb_hooks/assets/x"))
    files.mkdir("pb_public/folder")
    refused_alike(root, Exists, lambda: files.move("pb_hooks/assets/app.js", "pb_public/folder"))
    refused_alike(root, Exists, lambda: files.move("pb_public/folder", "pb_hooks/assets/app.js"))
    assert files.move("pb_public/folder", "pb_public/folder").path == "pb_public/folder"


# ----- limits


def test_a_file_over_the_size_limit_is_refused(root: Path) -> None:
    files = files_of(root, max_file_bytes=100)
    refused_alike(root, TooLarge, lambda: files.write("pb_public/index.html", b"x" * 101))
    refused_alike(root, TooLarge, lambda: files.write("pb_public/new.html", b"x" * 101))
    with files.open_upload("pb_public/index.html") as upload:
        upload.write_at(0, b"x" * 60)
        with pytest.raises(TooLarge, match="larger than the 100 B a file may have"):
            upload.write_at(60, b"x" * 41)  # grows past the limit: aborted at once
    assert (root / "pb_public" / "index.html").read_bytes() == b"<h1>old</h1>"
    assert sorted(os.listdir(root / "pb_public")) == ["assets", "index.html"]
    assert files.write("pb_public/index.html", b"x" * 100).size == 100


def test_the_number_of_files_and_folders_is_limited(root: Path) -> None:
    # the three folders hold 3 entries: assets/, assets/app.js, index.html
    files = files_of(root, max_files=5)
    files.write("pb_hooks/a.pb.js", b"a")
    refused_alike(root, OverQuota, lambda: files.write("pb_hooks/sub/b.pb.js", b"b"))  # two
    files.mkdir("pb_hooks/sub")
    refused_alike(root, OverQuota, lambda: files.write("pb_hooks/b.pb.js", b"b"))
    refused_alike(root, OverQuota, lambda: files.mkdir("pb_hooks/other"))
    assert files.write("pb_hooks/a.pb.js", b"replaced").size == 8  # replacing adds nothing
    assert files.count() == 5
    files.delete("pb_hooks/a.pb.js")
    files.write("pb_hooks/b.pb.js", b"b")


def test_the_disk_quota_is_counted_across_writes(root: Path) -> None:
    files = files_of(root, quota_bytes=100)
    refused_alike(root, OverQuota, lambda: files.write("pb_public/big.bin", b"x" * 101))
    files.write("pb_public/a.bin", b"x" * 60)
    refused_alike(root, OverQuota, lambda: files.write("pb_public/b.bin", b"x" * 60))
    assert files.bytes_added == 60
    assert (files.take_unrecorded(), files.take_unrecorded()) == (60, 0)
    files.write("pb_public/a.bin", b"x" * 10)  # smaller than what it replaces
    assert files.bytes_added == 10
    assert files.take_unrecorded() == -50
    files.write("pb_public/b.bin", b"x" * 80)
    files.delete("pb_public/b.bin")
    assert files.bytes_added == 10
    full = files_of(root, quota_bytes=0)  # nothing left: only what shrinks goes through
    refused_alike(root, OverQuota, lambda: full.write("pb_public/c.bin", b"x"))
    full.write("pb_public/index.html", b"<h1>")
    assert full.bytes_added == len(b"<h1>") - len(b"<h1>old</h1>")
