"""`pocketfleet runtime migrate up | down [N] | create NAME | collections | history-sync`, run
as a real command, side by side with `pocketbase migrate` where both can do the same (the same
steps on a JS and a Python copy of the migrations answer the same lines)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from instance_runtime.core.app import App
from instance_runtime.core.migrations import load_file
from tests.support.engines import POCKETBASE, POCKETFLEET

SOURCES = {
    "1_posts": (
        'migrate((app) => {\n  app.save(new Collection({name: "cm_posts"}))\n'
        '}, (app) => {\n  app.delete(app.findCollectionByNameOrId("cm_posts"))\n})\n',
        'def up(app):\n    app.collections.save({"name": "cm_posts"})\n\n\n'
        'def down(app):\n    app.collections.delete("cm_posts")\n',
    ),
    "2_tags": (
        'migrate((app) => {\n  app.save(new Collection({name: "cm_tags"}))\n'
        '}, (app) => {\n  app.delete(app.findCollectionByNameOrId("cm_tags"))\n})\n',
        'def up(app):\n    app.collections.save({"name": "cm_tags"})\n\n\n'
        'def down(app):\n    app.collections.delete("cm_tags")\n',
    ),
}


def migrate(
    engine: str, root: Path, *args: str, answer: str = ""
) -> subprocess.CompletedProcess[str]:
    if engine == "pocketbase":
        argv = [str(POCKETBASE), "migrate", *args]
    else:
        argv = [str(POCKETFLEET), "runtime", "migrate", *args]
    argv += ["--dir", str(root / "pb_data"), "--migrationsDir", str(root / "pb_migrations")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PF_")} | {"NO_COLOR": "1"}
    return subprocess.run(
        argv, input=answer, capture_output=True, text=True, timeout=120, check=False, env=env
    )


def ours(root: Path, *args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    return migrate("pocketfleet", root, *args, answer=answer)


def lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """What a command said on stdout, with the engines' file extensions made alike."""
    return [re.sub(r"\.(js|py)$", ".EXT", line) for line in done.stdout.strip().splitlines()]


def files(root: Path) -> list[str]:
    with sqlite3.connect(root / "pb_data" / "data.db") as conn:
        rows = conn.execute("SELECT file FROM _migrations ORDER BY rowid")
        return [str(r[0]) for r in rows if not str(r[0]).endswith(".go")]


def collections(root: Path) -> list[dict[str, Any]]:
    runtime = App(root / "pb_data", readers=1)
    try:
        items = [c.to_json() for c in runtime.schema.all()]
    finally:
        runtime.close()
    return sorted(
        ({k: v for k, v in c.items() if k not in ("created", "updated")} for c in items),
        key=lambda c: str(c["name"]),
    )


def test_up_down_and_history_sync_answer_as_pocketbase(tmp_path: Path) -> None:
    answers: dict[str, list[list[str]]] = {}
    for engine, index in (("pocketbase", 0), ("pocketfleet", 1)):
        root = tmp_path / engine
        (root / "pb_migrations").mkdir(parents=True)
        extension = ".js" if index == 0 else ".py"
        for name, sources in SOURCES.items():
            (root / "pb_migrations" / (name + extension)).write_text(sources[index])
        said = [
            migrate(engine, root, "up"),
            migrate(engine, root, "up"),
            migrate(engine, root, "down"),  # no answer: cancelled
            migrate(engine, root, "down", answer="y\n"),
            migrate(engine, root, "up"),
        ]
        (root / "pb_migrations" / ("2_tags" + extension)).unlink()
        said.append(migrate(engine, root, "history-sync"))
        assert all(done.returncode == 0 for done in said), [d.stderr for d in said]
        assert files(root) == ["1_posts" + extension]
        answers[engine] = [lines(done) for done in said]
    assert answers["pocketfleet"] == answers["pocketbase"]
    assert answers["pocketfleet"] == [
        ["Applied 1_posts.EXT", "Applied 2_tags.EXT"],
        ["No new migrations to apply."],
        ["The command has been cancelled"],
        ["Reverted 2_tags.EXT"],
        ["Applied 2_tags.EXT"],
        ["The _migrations table was synced with the available migrations."],
    ]


def test_down_counts(tmp_path: Path) -> None:
    (tmp_path / "pb_migrations").mkdir()
    for name, sources in SOURCES.items():
        (tmp_path / "pb_migrations" / f"{name}.py").write_text(sources[1])
    assert ours(tmp_path, "up").returncode == 0

    refused = ours(tmp_path, "down", "two", answer="y\n")
    assert refused.returncode == 2 and "'two' is not a whole number" in refused.stderr
    two = ours(tmp_path, "down", "2", answer="y\n")
    assert lines(two) == ["Reverted 2_tags.EXT", "Reverted 1_posts.EXT"]
    assert "Do you really want to revert the last 2 applied migration(s)?" in two.stderr
    assert lines(ours(tmp_path, "down", answer="y\n")) == ["No migrations to revert."]
    assert ours(tmp_path, "up").returncode == 0
    every = ours(tmp_path, "down", "-1", answer="yes\n")
    assert lines(every) == ["Reverted 2_tags.EXT", "Reverted 1_posts.EXT"]
    assert files(tmp_path) == []


def test_create_writes_a_blank_migration_once_confirmed(tmp_path: Path) -> None:
    cancelled = ours(tmp_path, "create", "AddPosts table", answer="\n")
    assert lines(cancelled) == ["The command has been cancelled"]
    assert not (tmp_path / "pb_migrations").exists()

    before = int(time.time())
    done = ours(tmp_path, "create", "AddPosts table", answer="y\n")

    assert done.returncode == 0, done.stderr
    [made] = list((tmp_path / "pb_migrations").iterdir())
    assert re.fullmatch(r"(\d+)_add_posts_table\.py", made.name)
    assert before <= int(made.name.split("_")[0]) <= int(time.time())
    assert done.stdout.strip() == f'Successfully created file "{made}"'
    assert 'Do you really want to create migration "' in done.stderr
    migration = load_file(made)  # a valid migration whose up and down do nothing
    assert migration.down is not None
    assert lines(ours(tmp_path, "up")) == [f"Applied {made.stem}.EXT"]
    missing = ours(tmp_path, "create")
    assert missing.returncode == 2 and "Missing argument" in missing.stderr


def test_collections_writes_a_snapshot_that_rebuilds_them(tmp_path: Path) -> None:
    made = tmp_path / "made"
    (made / "pb_migrations").mkdir(parents=True)
    (made / "pb_migrations" / "1_shop.py").write_text(
        "def up(app):\n"
        "    owners = app.collections.save({'name': 'cm_owners', 'type': 'auth'})\n"
        "    app.collections.save({'name': 'cm_shops', 'fields': [\n"
        "        {'name': 'owner', 'type': 'relation', 'collectionId': owners.id},\n"
        "        {'name': 'name', 'type': 'text', 'required': True}]})\n"
    )
    assert ours(made, "up").returncode == 0
    done = ours(made, "collections", answer="y\n")
    assert done.returncode == 0, done.stderr
    [snapshot] = [p for p in (made / "pb_migrations").iterdir() if p.name != "1_shop.py"]
    assert re.fullmatch(r"\d+_collections_snapshot\.py", snapshot.name)

    fresh = tmp_path / "fresh"
    (fresh / "pb_migrations").mkdir(parents=True)
    (fresh / "pb_migrations" / snapshot.name).write_bytes(snapshot.read_bytes())
    assert lines(ours(fresh, "up")) == [f"Applied {snapshot.stem}.EXT"]
    assert collections(fresh) == collections(made)


@pytest.mark.parametrize("command", [["up"], ["down"], ["collections"], ["history-sync"]])
def test_a_broken_migration_is_refused_by_every_command(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "pb_migrations").mkdir()
    (tmp_path / "pb_migrations" / "1_posts.py").write_text(SOURCES["1_posts"][1])
    (tmp_path / "pb_migrations" / "2_broken.py").write_text("def up(app):\n    return (\n")

    done = ours(tmp_path, *command, answer="y\n")

    assert done.returncode == 1
    assert done.stderr.strip().startswith(
        "Error: failed to load migration 2_broken.py: SyntaxError"
    )
    assert not (tmp_path / "pb_data").exists()  # refused before the instance was even opened
