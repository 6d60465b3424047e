"""The migrations runner (`core.migrations`) on a real database: file-name order, PocketBase's
`_migrations` table, one transaction per batch, down and history-sync, refused files, and the
typed `app` a migration gets (records, collections and raw SQL in the same transaction)."""

from __future__ import annotations

import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from instance_runtime.core.app import App
from instance_runtime.core.migrations import MigrationError, Runner, apply_at_start, load
from instance_runtime.core.system_collections import SYSTEM_MIGRATIONS
from tests.support.engines import POCKETBASE

AUTHORS = """
    def up(app):
        app.collections.save({
            "name": "authors", "type": "auth",
            "fields": [{"name": "nick", "type": "text"}],
        })

    def down(app):
        app.collections.delete("authors")
"""
BOOKS = """
    def up(app):
        authors = app.collections.get("authors")
        app.collections.save({
            "name": "books",
            "fields": [
                {"name": "title", "type": "text", "required": True},
                {"name": "author", "type": "relation", "collectionId": authors.id, "maxSelect": 1},
            ],
        })

    def down(app):
        app.collections.delete("books")
"""
SEED = """
    def up(app):
        author = app.create("authors", {
            "id": "author000000001", "email": "ann@example.com", "nick": "ann",
            "password": "ann-pass-1234", "passwordConfirm": "ann-pass-1234",
        })
        app.create("books", {"id": "book00000000001", "title": "One", "author": author["id"]})

    def down(app):
        app.delete("books", "book00000000001")
        app.delete("authors", "author000000001")
"""


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[App]:
    app = App(tmp_path / "pb_data", readers=1)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "pb_migrations"


def rows(runtime: App, sql: str) -> list[tuple[object, ...]]:
    return runtime.db.read_sync(lambda conn: [tuple(r) for r in conn.execute(sql)])


def migrations_table(runtime: App) -> list[tuple[object, ...]]:
    """The rows of `_migrations` but PocketBase's system ones (the bootstrap records them)."""
    every = rows(runtime, "SELECT file, applied FROM _migrations ORDER BY rowid")
    return [row for row in every if row[0] not in SYSTEM_MIGRATIONS]


def system_rows(runtime: App) -> list[tuple[object, ...]]:
    every = rows(runtime, "SELECT file, applied FROM _migrations ORDER BY rowid")
    return [row for row in every if row[0] in SYSTEM_MIGRATIONS]


def user_collections(runtime: App) -> list[str]:
    return sorted(c.name for c in runtime.schema.all() if not c.system and c.name != "users")


def test_up_applies_in_file_name_order_and_records_each(runtime: App, folder: Path) -> None:
    step = 'def up(app):\n    app.execute("INSERT INTO steps (name) VALUES (?)", ("{name}",))\n'
    write(folder, "0_table.py", 'def up(app):\n    app.execute("CREATE TABLE steps (name TEXT)")\n')
    for name in ("2_b.py", "10_c.py", "1_a.py"):
        write(folder, name, step.format(name=name))
    before = time.time_ns() // 1000

    applied = Runner(runtime, load(folder)).up()

    after = time.time_ns() // 1000
    assert applied == ["0_table.py", "10_c.py", "1_a.py", "2_b.py"]  # names compared as strings
    assert rows(runtime, "SELECT name FROM steps ORDER BY rowid") == [
        ("10_c.py",), ("1_a.py",), ("2_b.py",),
    ]  # fmt: skip
    recorded = migrations_table(runtime)
    assert [file for file, _ in recorded] == applied
    assert all(isinstance(at, int) and before <= at <= after for _, at in recorded)  # microseconds
    assert Runner(runtime, load(folder)).up() == []


def test_the_table_has_pocketbases_schema(tmp_path: Path, runtime: App, folder: Path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(
        [str(POCKETBASE), "migrate", "up", "--dir", str(reference / "pb_data"),
         "--migrationsDir", str(reference / "pb_migrations")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    query = "SELECT sql FROM sqlite_master WHERE name = '_migrations'"
    with sqlite3.connect(reference / "pb_data" / "data.db") as conn:
        theirs = conn.execute(query).fetchone()
    Runner(runtime, load(folder)).up()
    assert rows(runtime, query) == [theirs]


def test_a_migration_gets_records_collections_and_sql(runtime: App, folder: Path) -> None:
    write(folder, "1_authors.py", AUTHORS)
    write(folder, "2_books.py", BOOKS)
    write(folder, "3_seed.py", SEED)
    write(folder, "4_edit.py", """
        def up(app):
            books = app.collections.draft("books")
            books.add_field_at(2, {"name": "pages", "type": "number"})
            books.update({"indexes": ["CREATE INDEX idx_books_title ON books (title)"]})
            app.collections.save(books)
            app.update("books", "book00000000001", {"pages": 12})
            count = app.execute("SELECT count(*) FROM books WHERE pages = ?", (12,)).fetchone()
            assert count[0] == 1
            assert app.find_first("books", "author.nick = {:nick}", {"nick": "ann"}) is not None
    """)  # fmt: skip

    assert apply_at_start(runtime, folder) == [
        "1_authors.py",
        "2_books.py",
        "3_seed.py",
        "4_edit.py",
    ]

    books = runtime.schema.find("books")
    assert books is not None and books.field_names() == ["id", "title", "pages", "author"]
    assert books.indexes == ["CREATE INDEX idx_books_title ON books (title)"]
    book = rows(runtime, "SELECT title, pages, author FROM books")
    assert book == [("One", 12, "author000000001")]
    hashed = rows(runtime, "SELECT password FROM authors")[0][0]
    assert isinstance(hashed, str) and hashed.startswith("$2")  # through the records service


def test_a_failing_migration_rolls_back_the_whole_batch(runtime: App, folder: Path) -> None:
    write(folder, "1_authors.py", AUTHORS)
    write(folder, "2_books.py", BOOKS)
    write(folder, "3_fail.py", 'def up(app):\n    raise ValueError("boom")\n')

    with pytest.raises(MigrationError) as raised:
        apply_at_start(runtime, folder)

    assert (
        str(raised.value)
        == "failed to apply migration 3_fail.py: ValueError: boom (at 3_fail.py:2)"
    )
    assert user_collections(runtime) == []
    assert rows(runtime, "SELECT name FROM sqlite_master WHERE name IN ('authors', 'books')") == []
    assert migrations_table(runtime) == []
    write(folder, "3_fail.py", "def up(app):\n    pass\n")
    assert apply_at_start(runtime, folder) == ["1_authors.py", "2_books.py", "3_fail.py"]
    assert user_collections(runtime) == ["authors", "books"]


def test_a_refused_change_names_pocketbases_error(runtime: App, folder: Path) -> None:
    write(folder, "1_bad.py", 'def up(app):\n    app.collections.save({"name": "x y"})\n')
    with pytest.raises(MigrationError) as raised:
        apply_at_start(runtime, folder)
    message = str(raised.value)
    assert message.startswith("failed to apply migration 1_bad.py: Failed to create collection. ")
    assert '"validation_match_invalid"' in message and "(at 1_bad.py:2)" in message


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("def up(app)\n    pass\n", "SyntaxError: expected ':' (line 1)"),
        ('raise RuntimeError("at import")\n', "RuntimeError: at import (at 2_broken.py:1)"),
        ("def down(app):\n    pass\n", "it defines no up(app) function"),
        ("async def up(app):\n    pass\n", "up(app) must be a plain def, not async"),
        ("def up(app):\n    pass\ndown = 3\n", "down is not a function"),
    ],
    ids=["syntax-error", "raises-at-import", "no-up", "async-up", "bad-down"],
)
def test_a_broken_file_is_refused_before_anything_runs(
    runtime: App, folder: Path, source: str, problem: str
) -> None:
    write(folder, "1_authors.py", AUTHORS)
    write(folder, "2_broken.py", source)
    with pytest.raises(MigrationError) as raised:
        apply_at_start(runtime, folder)
    assert str(raised.value) == f"failed to load migration 2_broken.py: {problem}"
    assert user_collections(runtime) == []
    assert migrations_table(runtime) == []


def test_down_reverts_the_last_applied_latest_first(runtime: App, folder: Path) -> None:
    write(folder, "1_authors.py", AUTHORS)
    write(folder, "2_books.py", BOOKS)
    runner = Runner(runtime, load(folder))
    runner.up()
    write(folder, "0_late.py", "def up(app):\n    pass\n")  # sorts first, applied last
    write(folder, "3_seed.py", SEED)
    runner = Runner(runtime, load(folder))
    assert runner.up() == ["0_late.py", "3_seed.py"]

    assert runner.last_applied(3) == ["3_seed.py", "0_late.py", "2_books.py"]
    assert runner.down() == ["3_seed.py"]
    assert rows(runtime, "SELECT count(*) FROM books") == [(0,)]
    assert runner.down(0) == []
    assert runner.down(2) == ["0_late.py", "2_books.py"]
    assert user_collections(runtime) == ["authors"]
    system = system_rows(runtime)
    assert runner.down(-1) == ["1_authors.py"]
    assert user_collections(runtime) == [] and migrations_table(runtime) == []
    assert system_rows(runtime) == system and len(system) == len(SYSTEM_MIGRATIONS)
    assert runner.down(5) == []


def test_down_only_reverts_loaded_migrations_and_may_lack_a_down(
    runtime: App, folder: Path
) -> None:
    write(folder, "1_a.py", 'def up(app):\n    app.execute("CREATE TABLE a (x)")\n')
    runner = Runner(runtime, load(folder))
    runner.up()
    runtime.db.write_sync(
        lambda conn: conn.execute(
            "INSERT INTO _migrations VALUES ('9_other.js', 99999999999999999)"
        )
    )
    assert runner.down(5) == ["1_a.py"]  # no down(): only forgotten
    assert rows(runtime, "SELECT name FROM sqlite_master WHERE name = 'a'") == [("a",)]
    assert [file for file, _ in migrations_table(runtime)] == ["9_other.js"]


def test_a_failing_down_reverts_nothing(runtime: App, folder: Path) -> None:
    write(folder, "1_authors.py", AUTHORS)
    write(
        folder,
        "2_fail_down.py",
        'def up(app):\n    pass\ndef down(app):\n    raise KeyError("x")\n',
    )
    runner = Runner(runtime, load(folder))
    runner.up()
    with pytest.raises(
        MigrationError, match=r"^failed to revert migration 2_fail_down.py: KeyError"
    ):
        runner.down(2)
    assert [file for file, _ in migrations_table(runtime)] == ["1_authors.py", "2_fail_down.py"]
    assert user_collections(runtime) == ["authors"]


def test_history_sync_forgets_only_this_engines_missing_files(runtime: App, folder: Path) -> None:
    write(folder, "1_a.py", "def up(app):\n    pass\n")
    write(folder, "2_gone.py", "def up(app):\n    pass\n")
    Runner(runtime, load(folder)).up()
    (folder / "2_gone.py").unlink()
    runtime.db.write_sync(
        lambda conn: conn.execute("INSERT INTO _migrations VALUES ('1700000000_x.js', 2)")
    )
    system = system_rows(runtime)

    assert Runner(runtime, load(folder)).history_sync() == ["2_gone.py"]
    files = [file for file, _ in migrations_table(runtime)]
    assert files == ["1_a.py", "1700000000_x.js"]
    assert [file for file, _ in system_rows(runtime)] == list(SYSTEM_MIGRATIONS)
    assert system_rows(runtime) == system  # PocketBase's own rows are not this engine's to judge


def test_a_missing_folder_has_no_migrations(runtime: App, tmp_path: Path) -> None:
    assert load(tmp_path / "nowhere") == []
    assert apply_at_start(runtime, tmp_path / "nowhere") == []


def test_only_py_files_directly_in_the_folder_count(runtime: App, folder: Path) -> None:
    write(folder, "1_a.py", "def up(app):\n    pass\n")
    write(folder, "2_b.js", "migrate((app) => {})\n")
    write(folder / "sub", "3_c.py", "def up(app):\n    pass\n")
    (folder / "4_dir.py").mkdir()
    assert [m.file for m in load(folder)] == ["1_a.py"]
    assert not (folder / "__pycache__").exists()
