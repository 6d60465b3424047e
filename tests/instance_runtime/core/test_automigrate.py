"""Automigrate and the generated migrations (`core.automigrate`, `core.migration_templates`):
collection changes through the API of a real runtime write applied migration files that, copied
into a fresh instance, rebuild the same collections and, reverted one by one, undo each change;
imports and empty changes write nothing, nor does a runtime with `--automigrate=false`; the
snapshot of `migrate collections` recreates every collection on an empty instance."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from instance_runtime.core import automigrate
from instance_runtime.core import migration_templates as templates
from instance_runtime.core.app import App
from instance_runtime.core.migrations import Runner, apply_at_start, load, load_file
from instance_runtime.core.models import Collection
from tests.instance_runtime.runtime_process import RuntimeProcess
from tests.support.server import scratch_dir

Json = dict[str, Any]


class AutomigrateRuntime(RuntimeProcess):
    """A runtime process with its `pb_migrations/` passed explicitly, and extra serve flags."""

    def __init__(self, root: Path, *flags: str) -> None:
        super().__init__(root)
        self.migrations_dir = root / "pb_migrations"
        self.flags = list(flags)

    def start(self) -> None:
        log = (self.root / "runtime.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "instance_runtime", "serve", "--dir", str(self.data_dir),
             "--http", f"127.0.0.1:{self.port}", "--migrationsDir", str(self.migrations_dir),
             *self.flags],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, (self.root / "runtime.log").read_text()
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "runtime did not become healthy"
            time.sleep(0.05)

    def files(self) -> list[str]:
        if not self.migrations_dir.is_dir():
            return []
        return sorted(p.name for p in self.migrations_dir.iterdir() if p.suffix == ".py")

    def recorded(self) -> list[str]:
        with sqlite3.connect(self.data_dir / "data.db") as conn:
            found = conn.execute("SELECT file FROM _migrations ORDER BY rowid")
            return [str(r[0]) for r in found if not str(r[0]).endswith(".go")]


@pytest.fixture
def root() -> Iterator[Path]:
    path = scratch_dir("pf-automigrate-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def started(root: Path, *flags: str) -> AutomigrateRuntime:
    runtime = AutomigrateRuntime(root, *flags)
    runtime.upsert_superuser()
    runtime.start()
    return runtime


def comparable(items: list[Json]) -> list[Json]:
    """Collections as a migration must reproduce them: all but their timestamps and the ids of
    view fields copied from collections (`_clone_XXXX`, drawn afresh on every save as
    PocketBase does)."""
    out = [{k: v for k, v in c.items() if k not in ("created", "updated")} for c in items]
    for c in out:
        if c.get("type") == "view":
            c["fields"] = [_unclone(f) for f in c.get("fields", [])]
    return sorted(out, key=lambda c: str(c["name"]))


def _unclone(field: Json) -> Json:
    return {**field, "id": "_clone_"} if str(field.get("id", "")).startswith("_clone_") else field


def api_state(client: httpx.Client) -> list[Json]:
    listed = client.get("/api/collections", params={"perPage": 500})
    assert listed.status_code == 200, listed.text
    return comparable(listed.json()["items"])


def schema_state(runtime: App) -> list[Json]:
    return comparable([c.to_json() for c in runtime.schema.all()])


def ok(response: httpx.Response) -> Json:
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else {}


def text(name: str, **extra: Any) -> Json:
    return {"name": name, "type": "text", **extra}


def test_api_changes_write_migrations_that_rebuild_and_revert_them(root: Path) -> None:
    original = started(root / "a")
    try:
        su = original.client(superuser=True)
        states = [api_state(su)]
        labels: list[str] = []

        def change(label: str, response: httpx.Response) -> Json:
            body = ok(response)
            states.append(api_state(su))
            labels.append(label)
            assert len(original.files()) == len(labels), (label, original.files())
            return body

        authors = change("created_am_authors", su.post("/api/collections", json={
            "name": "am_authors", "type": "auth", "fields": [text("nick")],
        }))  # fmt: skip
        change("created_am_books", su.post("/api/collections", json={
            "name": "am_books", "fields": [
                text("title", required=True),
                {"name": "author", "type": "relation", "collectionId": authors["id"],
                 "maxSelect": 1},
            ],
        }))  # fmt: skip
        books = su.get("/api/collections/am_books").json()
        fields = [*books["fields"], {"name": "pages", "type": "number", "min": 1}]
        change("updated_am_books", su.patch("/api/collections/am_books", json={
            "listRule": "", "fields": fields,
            "indexes": ["CREATE INDEX idx_am_books_title ON am_books (title)"],
        }))  # fmt: skip
        nick = next(f for f in authors["fields"] if f["name"] == "nick")
        renamed = [
            {**f, "name": "nickname", "max": 20} if f is nick else f for f in authors["fields"]
        ]
        change("updated_am_authors", su.patch("/api/collections/am_authors", json={
            "fields": renamed, "otp": {"enabled": True}, "authToken": {"duration": 3600},
        }))  # fmt: skip
        dropped = [f for f in fields if f["name"] != "author"]
        change("updated_am_books", su.patch("/api/collections/am_books", json={"fields": dropped}))
        change("created_am_view", su.post("/api/collections", json={
            "name": "am_view", "type": "view", "viewQuery": "SELECT id, pages FROM am_books",
        }))  # fmt: skip
        change("deleted_am_view", su.delete("/api/collections/am_view"))
        change("created_am_test_", su.post("/api/collections", json={"name": "am_test"}))

        files = original.files()
        assert [re.sub(r"^\d+_|\.py$", "", f) for f in files] == labels  # in the order made
        assert original.recorded() == files  # applied already
        assert "clientSecret" not in "".join(
            (original.migrations_dir / f).read_text() for f in files
        )
    finally:
        original.stop()

    copy = AutomigrateRuntime(root / "b")
    shutil.copytree(original.migrations_dir, copy.migrations_dir)
    copy.upsert_superuser()
    copy.start()
    try:
        assert api_state(copy.client(superuser=True)) == states[-1]
        assert copy.recorded() == files
    finally:
        copy.stop()

    runtime = App(copy.data_dir, readers=1)
    try:
        runner = Runner(runtime, load(copy.migrations_dir))
        for i in reversed(range(len(files))):
            assert runner.down() == [files[i]]
            assert schema_state(runtime) == states[i], f"after reverting {files[i]}"
    finally:
        runtime.close()


def test_imports_and_empty_changes_write_nothing(root: Path) -> None:
    runtime = started(root)
    try:
        su = runtime.client(superuser=True)
        ok(su.post("/api/collections", json={"name": "am_posts", "listRule": ""}))
        assert len(runtime.files()) == 1
        ok(su.patch("/api/collections/am_posts", json={"listRule": ""}))
        ok(su.put("/api/collections/import", json={"collections": [{"name": "am_imported"}]}))
        assert su.post("/api/collections", json={"name": "bad name"}).status_code == 400
        assert len(runtime.files()) == 1
        assert runtime.recorded() == runtime.files()
    finally:
        runtime.stop()


def test_a_runtime_without_automigrate_writes_nothing(root: Path) -> None:
    runtime = started(root, "--automigrate=false")
    try:
        su = runtime.client(superuser=True)
        ok(su.post("/api/collections", json={"name": "am_posts"}))
        ok(su.patch("/api/collections/am_posts", json={"listRule": ""}))
        ok(su.delete("/api/collections/am_posts"))
        assert runtime.files() == []
    finally:
        runtime.stop()


def test_a_file_that_cannot_be_written_records_nothing(root: Path) -> None:
    runtime = started(root)
    try:
        runtime.migrations_dir.write_text("not a folder")  # no file can be written in it
        su = runtime.client(superuser=True)
        ok(su.post("/api/collections", json={"name": "am_posts"}))  # the change itself stands
        assert su.get("/api/collections/am_posts").status_code == 200
        assert runtime.recorded() == []
        log = (runtime.root / "runtime.log").read_text()
        assert "automigrate: failed to write the migration of a collection change" in log
    finally:
        runtime.stop()


# ---------------------------------------------------------------------------- in-process
def test_the_snapshot_recreates_every_collection_on_an_empty_instance(tmp_path: Path) -> None:
    made = tmp_path / "made"
    (made / "pb_migrations").mkdir(parents=True)
    (made / "pb_migrations" / "1_collections.py").write_text(
        "def up(app):\n"
        "    authors = app.collections.save({'name': 'sn_authors', 'type': 'auth',\n"
        "        'fields': [{'name': 'nick', 'type': 'text'}], 'otp': {'enabled': True}})\n"
        "    app.collections.save({'name': 'sn_books', 'listRule': '', 'fields': [\n"
        "        {'name': 'author', 'type': 'relation', 'collectionId': authors.id},\n"
        "        {'name': 'title', 'type': 'text'}],\n"
        "        'indexes': ['CREATE INDEX idx_sn ON sn_books (title)']})\n"
        "    app.collections.save({'name': 'sn_view', 'type': 'view',\n"
        "        'viewQuery': 'SELECT id, title FROM sn_books'})\n"
    )
    source = App(made / "pb_data", readers=1)
    try:
        apply_at_start(source, made / "pb_migrations")
        snapshot = automigrate.snapshot_file(source, tmp_path / "snapshot", now=1700000000)
        expected = schema_state(source)
    finally:
        source.close()
    assert snapshot.name == "1700000000_collections_snapshot.py"

    empty = App(tmp_path / "empty" / "pb_data", readers=1)
    try:
        assert apply_at_start(empty, snapshot.parent) == [snapshot.name]
        assert schema_state(empty) == expected
        assert Runner(empty, load(snapshot.parent)).down() == [snapshot.name]  # down: nothing
        assert schema_state(empty) == expected
    finally:
        empty.close()


def test_a_new_file_never_sorts_before_one_of_the_same_second(tmp_path: Path) -> None:
    (tmp_path / "100_updated_posts.py").write_text("")
    assert automigrate.free_name(tmp_path, "updated_posts", now=100) == "101_updated_posts.py"
    assert automigrate.free_name(tmp_path, "deleted_posts", now=100) == "101_deleted_posts.py"
    assert automigrate.free_name(tmp_path, "zz_later", now=100) == "100_zz_later.py"
    assert automigrate.free_name(tmp_path, "x", now=99) == "99_x.py"
    taken = ["101_updated_posts.py"]
    assert automigrate.free_name(tmp_path, "updated_posts", 100, taken) == "102_updated_posts.py"


def test_names_are_snake_cased_as_pocketbase() -> None:
    assert automigrate.snakecase("myTestDB") == "my_test_db"
    assert automigrate.snakecase(".a!b@c#d$e%123. ") == "a_b_c_d_e_123"
    assert automigrate.snakecase("HelloWorld1HelloWorld2") == "hello_world1_hello_world2"
    assert automigrate.file_path(Path("m"), "Add posts", 5) == Path("m/5_add_posts.py")


def test_diffs_keep_only_what_changed() -> None:
    old = {"a": 1, "b": {"x": 1, "y": 2}, "gone": True, "fields": [1]}
    new = {"a": 1, "b": {"x": 1, "y": 3}, "added": [], "fields": [2]}
    assert templates.diff_maps(old, new, ("fields",)) == {
        "b": {"y": 3}, "added": [], "gone": None,
    }  # fmt: skip
    posts = Collection.from_json({"name": "posts", "fields": [text("id"), text("title")]})
    assert templates.updated(posts, posts) is None


def test_every_template_is_a_loadable_migration(tmp_path: Path) -> None:
    posts = Collection.from_json({"name": "posts", "fields": [text("title")]})
    changed = Collection.from_json({"name": "posts", "listRule": "", "fields": [text("body")]})
    updated = templates.updated(changed, posts)
    assert updated is not None
    sources = {
        "blank": templates.blank(),
        "snapshot": templates.snapshot([posts]),
        "created": templates.created(posts),
        "deleted": templates.deleted(posts),
        "updated": updated,
    }
    for name, source in sources.items():
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        migration = load_file(path)
        assert migration.down is not None, name
        compile(source, name, "exec")


def test_oauth2_providers_stay_out_of_migrations(root: Path) -> None:
    runtime = started(root)
    try:
        su = runtime.client(superuser=True)
        provider = {"name": "gitlab", "clientId": "am-client", "clientSecret": "am-hush-hush"}
        ok(su.post("/api/collections", json={
            "name": "am_members", "type": "auth",
            "oauth2": {"enabled": True, "providers": [provider]},
        }))  # fmt: skip
        ok(su.patch("/api/collections/am_members", json={"oauth2": {"providers": []}}))
        assert len(runtime.files()) == 1  # a change of providers alone is no change
        source = (runtime.migrations_dir / runtime.files()[0]).read_text()
        assert '"oauth2": {' in source
        assert "am-client" not in source and "am-hush-hush" not in source
        assert '"providers"' not in source
    finally:
        runtime.stop()
