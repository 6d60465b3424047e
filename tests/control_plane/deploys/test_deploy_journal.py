"""A deploy cut off at any point of its switch is undone from its journal: the instance's
previous folders are found by their inodes and put back, whatever had been moved."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from control_plane.deploys import journal, switch

FOLDERS = ["pb_hooks", "pb_migrations", "pb_public"]


class Crash(Exception):
    """Stands for the control plane dying between two renames."""


def tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def contents(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] in FOLDERS
    }


OLD = {"pb_hooks/a.pb.js": "old hook", "pb_public/index.html": "old page"}
NEW = {"pb_public/index.html": "new page", "pb_migrations/1.js": "new migration"}


def count_renames(monkeypatch: pytest.MonkeyPatch, crash_after: int) -> None:
    """Make the switch's renames fail once `crash_after` of them went through."""
    done = 0
    real_rename, real_rename_at = os.rename, switch.rename_at

    def guard(call: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal done
            if done >= crash_after:
                raise Crash
            done += 1
            return call(*args, **kwargs)

        return run

    monkeypatch.setattr(os, "rename", guard(real_rename))
    monkeypatch.setattr(switch, "rename_at", guard(real_rename_at))


@pytest.mark.parametrize("crash_after", range(7))
def test_a_switch_cut_off_anywhere_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after: int
) -> None:
    root, work = tmp_path / "instance", tmp_path / "work"
    staged = work / "new"
    tree(root, OLD)
    tree(staged, NEW)
    journal.write(work, staged, root, FOLDERS)
    count_renames(monkeypatch, crash_after)
    with contextlib.suppress(Crash):
        switch.switch(staged, work / "old", root, FOLDERS, os.getuid())
    monkeypatch.undo()
    entries = journal.read(work)
    assert entries is not None
    assert journal.switched(root, entries) == (contents(root) == NEW)
    journal.put_back(work, root, entries)
    assert contents(root) == OLD
    assert not (root / "pb_migrations").exists()  # it was not there before the deploy


def test_put_back_twice_changes_nothing_more(tmp_path: Path) -> None:
    root, work = tmp_path / "instance", tmp_path / "work"
    tree(root, OLD)
    tree(work / "new", NEW)
    journal.write(work, work / "new", root, FOLDERS)
    switch.switch(work / "new", work / "old", root, FOLDERS, os.getuid())
    entries = journal.read(work)
    assert entries is not None
    assert sorted(journal.put_back(work, root, entries)) == FOLDERS
    assert journal.put_back(work, root, entries) == []
    assert contents(root) == OLD


def test_no_or_a_torn_journal_means_nothing_was_moved(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert journal.read(work) is None
    (work / journal.JOURNAL).write_bytes(b'{"folders": {"pb_hooks": {"new"')
    assert journal.read(work) is None
