"""Measuring an instance folder the way a hostile tenant cannot cheat: links not followed,
sparse files by their blocks, hard links once, one filesystem, bounded walks. Real files on
the real filesystem; `du -sx --block-size=1` is the reference figure."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.disk_usage import measure
from tests.support.server import scratch_dir

MiB = 1024 * 1024


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = scratch_dir("pf-disk-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write(path: Path, size: int) -> Path:
    """A file of `size` real (allocated) bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(b"x" * size)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def du(path: Path) -> int:
    result = subprocess.run(
        ["du", "-sx", "--block-size=1", str(path)], check=True, capture_output=True, text=True
    )
    return int(result.stdout.split()[0])


def instance_folder(root: Path) -> Path:
    folder = root / "instance"
    for sub in ("pb_data", "pb_hooks", "pb_public", "pb_migrations"):
        (folder / sub).mkdir(parents=True)
    write(folder / "pb_data" / "data.db", 256 * 1024)
    return folder


def test_links_out_sparse_files_and_hard_links_are_counted_as_the_disk_holds_them(
    scratch: Path,
) -> None:
    folder = instance_folder(scratch)
    before = measure(folder)
    assert before.complete and before.bytes == du(folder)

    # a big file outside, and links to it (and to the root and to a folder outside)
    outside = write(scratch / "other-tenant" / "data.db", 32 * MiB)
    (folder / "pb_public" / "stolen.db").symlink_to(outside)
    (folder / "pb_public" / "root").symlink_to("/")
    (folder / "pb_public" / "up").symlink_to(outside.parent)
    # a sparse file: 1 GiB long, 1 MiB written
    with (folder / "pb_data" / "sparse.bin").open("wb") as handle:
        handle.truncate(1024 * MiB)
        handle.seek(0)
        handle.write(b"s" * MiB)
    # one 4 MiB file under four names
    first = write(folder / "pb_data" / "linked-0", 4 * MiB)
    for n in (1, 2, 3):
        os.link(first, folder / "pb_hooks" / f"linked-{n}")

    after = measure(folder)
    assert after.complete
    assert after.bytes == du(folder)
    grown = after.bytes - before.bytes
    assert 5 * MiB <= grown < 5 * MiB + 256 * 1024  # 1 MiB sparse + 4 MiB once + links' inodes
    assert after.entries == before.entries + 8  # 3 symlinks, the sparse file, 4 names


def test_a_mounted_filesystem_inside_is_neither_counted_nor_entered(scratch: Path) -> None:
    folder = instance_folder(scratch)
    before = measure(folder).bytes
    mount_point = folder / "pb_public" / "mnt"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        write(mount_point / "big.bin", 8 * MiB)
        usage = measure(folder)
        assert usage.complete
        assert usage.bytes == before  # the mount point's own folder is on the tmpfs too
        assert usage.bytes == du(folder)
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_the_folder_itself_must_not_be_a_link(scratch: Path) -> None:
    folder = instance_folder(scratch)
    link = scratch / "link"
    link.symlink_to(folder)
    with pytest.raises(OSError):
        measure(link)
    with pytest.raises(FileNotFoundError):
        measure(scratch / "missing")


def test_a_walk_stops_at_its_entry_budget_and_says_so(scratch: Path) -> None:
    folder = instance_folder(scratch)
    many = folder / "pb_public" / "many"
    many.mkdir()
    for n in range(300):
        (many / f"f{n}").touch()
    whole = measure(folder)
    assert whole.complete and whole.entries >= 306
    bounded = measure(folder, max_entries=100)
    assert not bounded.complete
    assert bounded.entries == 100
    assert bounded.bytes <= whole.bytes


def test_a_walk_enters_folders_only_to_its_depth_and_says_so(scratch: Path) -> None:
    folder = instance_folder(scratch)
    deep = folder / "pb_public"
    for n in range(12):
        deep = deep / f"d{n}"
    deep.mkdir(parents=True)
    write(deep / "hidden.bin", 2 * MiB)
    assert measure(folder).complete
    shallow = measure(folder, max_depth=6)
    assert not shallow.complete
    assert shallow.bytes < measure(folder).bytes - 2 * MiB + 1
