"""docs/migrations.md: its examples type-check strictly against the typed `MigrationApp` (what
an editor completes, mypy checks), and apply and revert on a real database as the page says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from instance_runtime.core.app import App
from instance_runtime.core.migrations import Runner, apply_at_start, load

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "migrations.md"
_BLOCK = re.compile(
    r"```python\n# pb_migrations/(?P<name>[\w.-]+\.py)\n(?P<code>.*?)```", re.DOTALL
)


def doc_files() -> dict[str, str]:
    return {m.group("name"): m.group("code") for m in _BLOCK.finditer(DOCS.read_text())}


def write_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, code in doc_files().items():
        (folder / name).write_text(code)
    return folder


def test_the_page_has_its_examples() -> None:
    assert sorted(doc_files()) == ["1717000000_create_posts.py", "1717000100_posts_slug.py"]


def test_the_examples_type_check_strictly(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "pb_migrations")
    wrong = folder / "9_wrong.py"
    wrong.write_text(
        "from instance_runtime.hooks import MigrationApp\n\n\n"
        "def up(app: MigrationApp) -> None:\n"
        "    app.collections.sav({})\n"
    )
    argv = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(
        [*argv, *sorted(str(p) for p in folder.glob("*.py"))],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith(str(wrong)), done.stdout
    assert '"TxCollections" has no attribute "sav"' in errors[0]


def test_the_examples_apply_and_revert(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "pb_migrations")
    runtime = App(tmp_path / "pb_data", readers=1)
    try:
        assert apply_at_start(runtime, folder) == sorted(doc_files())
        posts = runtime.schema.find("posts")
        assert posts is not None and posts.field_names() == ["id", "title", "slug", "author"]
        assert posts.indexes == [
            "CREATE UNIQUE INDEX `idx_posts_slug` ON `posts` (slug) WHERE slug != ''"
        ]
        rows = runtime.db.read_sync(lambda c: c.execute("SELECT title, slug FROM posts").fetchall())
        assert [tuple(r) for r in rows] == [("Hello world", "hello-world")]

        runner = Runner(runtime, load(folder))
        assert runner.down() == ["1717000100_posts_slug.py"]
        posts = runtime.schema.find("posts")
        assert posts is not None and posts.field_names() == ["id", "title", "author"]
        assert posts.indexes == []
        assert runner.down() == ["1717000000_create_posts.py"]
        assert runtime.schema.find("posts") is None
    finally:
        runtime.close()
