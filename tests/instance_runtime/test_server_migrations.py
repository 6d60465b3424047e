"""Migrations when a runtime starts (`serve`): applied from `DIR/../pb_migrations` by default
before it listens, with the Python hooks already loaded (as PocketBase loads its JS hooks
first); a broken or failing migration stops the start with a clear error, nothing applied —
as the real PocketBase refuses to start on a failing JS migration."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.instance_runtime.hooks_runtime import HooksRuntime
from tests.support.engines import POCKETBASE
from tests.support.ports import free_port
from tests.support.server import scratch_dir

HOOK = """
from instance_runtime.hooks import RecordEvent, app


@app.on_record_create("sm_posts")
def shout(e: RecordEvent) -> None:
    e.record["title"] = str(e.record["title"]).upper()
    e.next()
"""
POSTS = """
from instance_runtime.hooks import MigrationApp


def up(app: MigrationApp) -> None:
    app.collections.save({"name": "sm_posts", "fields": [{"name": "title", "type": "text"}]})
    app.create("sm_posts", {"title": "hello"})


def down(app: MigrationApp) -> None:
    app.collections.delete("sm_posts")
"""


@pytest.fixture
def root() -> Iterator[Path]:
    path = scratch_dir("pf-serve-migrations-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def tables(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "data.db") as conn:
        return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}


def test_migrations_run_before_serving_with_the_hooks_loaded() -> None:
    def setup(rt: HooksRuntime) -> None:
        folder = rt.root / "pb_migrations"  # the default: beside the data folder
        folder.mkdir()
        (folder / "1_posts.py").write_text(POSTS)

    with HooksRuntime.started({"10_shout.py": HOOK}, setup=setup) as rt:
        listed = rt.client(superuser=True).get("/api/collections/sm_posts/records")
        assert listed.status_code == 200, listed.text
        assert [r["title"] for r in listed.json()["items"]] == ["HELLO"]
        assert "Applied migration 1_posts.py" in rt.log()


def serve(engine: str, root: Path) -> subprocess.CompletedProcess[str]:
    """Start an engine on `root` that must refuse to start (it would serve otherwise)."""
    data, migrations = root / "pb_data", root / "pb_migrations"
    http = f"127.0.0.1:{free_port()}"
    if engine == "pocketbase":
        argv = [str(POCKETBASE), "serve", "--dir", str(data), "--migrationsDir", str(migrations)]
    else:
        argv = [sys.executable, "-m", "instance_runtime", "serve", "--dir", str(data),
                "--migrationsDir", str(migrations)]  # fmt: skip
    return subprocess.run(
        [*argv, "--http", http], capture_output=True, text=True, timeout=60, check=False
    )


FAILING = {
    "pocketbase": (
        "1_posts.js",
        'migrate((app) => { app.save(new Collection({name: "sm_posts"})) })',
        "2_fail.js",
        'migrate((app) => { throw new Error("nope") })',
    ),
    "pocketfleet": (
        "1_posts.py",
        'def up(app):\n    app.collections.save({"name": "sm_posts"})\n',
        "2_fail.py",
        'def up(app):\n    raise RuntimeError("nope")\n',
    ),
}


@pytest.mark.parametrize("engine", ["pocketbase", "pocketfleet"])
def test_a_failing_migration_stops_the_start_with_nothing_applied(root: Path, engine: str) -> None:
    first, first_source, failing, failing_source = FAILING[engine]
    (root / "pb_migrations").mkdir()
    (root / "pb_migrations" / first).write_text(first_source)
    (root / "pb_migrations" / failing).write_text(failing_source)

    done = serve(engine, root)

    assert done.returncode != 0
    assert f"failed to apply migration {failing}" in done.stderr
    assert "nope" in done.stderr
    assert "sm_posts" not in tables(root / "pb_data")
    with sqlite3.connect(root / "pb_data" / "data.db") as conn:
        files = [str(r[0]) for r in conn.execute("SELECT file FROM _migrations")]
    assert first not in files and failing not in files


def test_our_refusal_is_one_clear_line(root: Path) -> None:
    (root / "pb_migrations").mkdir()
    (root / "pb_migrations" / "1_syntax.py").write_text("def up(app)\n    pass\n")

    done = serve("pocketfleet", root)

    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: failed to load migration 1_syntax.py: SyntaxError: expected ':' (line 1)"
    )
    assert "Traceback" not in done.stderr
