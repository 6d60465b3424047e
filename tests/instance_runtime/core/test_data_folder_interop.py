"""One data folder, two engines: a folder (or a backup) made by our engine opens in the real
PocketBase 0.40.6 as one it made itself, and the other way round.

Each engine in turn makes collections (an auth one with a user, a base one with a relation,
a file field and an index, a view), records, an uploaded file and a setting, and stops; the
other engine then serves the same folder: the same collections and records, the user's login
with its password, the file, the setting; it writes a record of its own, stops, and the first
engine sees that write. A backup our engine made (`POST /api/backups`) restores into
PocketBase. A folder an earlier version of our engine made (no PocketBase migration rows, its
own `_params`) is upgraded at start; PocketBase's own history is never rewritten."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from instance_runtime.core import system_collections
from instance_runtime.core.app import App
from tests.support.engines import (
    Engine,
    EngineProcess,
    pocketfleet_runtime_available,
    serve_command,
    start_engine,
)
from tests.support.ports import free_port

EMAIL = "interop-admin@example.com"
PASSWORD = "interop-pass-123"
USER_EMAIL = "ann@example.com"
USER_PASSWORD = "ann-secret-1234"
PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 24
OTHER_PICTURE = b"GIF89a" + bytes(reversed(range(256))) * 8
APP_NAME = "Interop app"
POCKETBASE_ROWS = list(system_collections.SYSTEM_MIGRATIONS)

pytestmark = pytest.mark.skipif(
    not pocketfleet_runtime_available(), reason="`pocketfleet runtime serve` is not available"
)


def _other(engine: Engine) -> Engine:
    return "pocketbase" if engine == "pocketfleet" else "pocketfleet"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PF_")}
    env["NO_COLOR"] = "1"
    return env


@contextmanager
def serving(engine: Engine, root: Path) -> Iterator[EngineProcess]:
    """`engine` on the existing folder `root` (nothing created first), until the block ends."""
    port = free_port()
    log_path = root / f"{engine}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            serve_command(engine, root, port), stdout=log, stderr=subprocess.STDOUT, env=_env()
        )
    running = EngineProcess(engine, root, port, process, log_path)
    try:
        running.wait_healthy(30)
        yield running
    finally:
        running.stop()


@contextmanager
def fresh(engine: Engine, root: Path) -> Iterator[EngineProcess]:
    running = start_engine(engine, root, EMAIL, PASSWORD)
    try:
        yield running
    finally:
        running.stop()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json() if response.content else None


def superuser(url: str) -> httpx.Client:
    answer = httpx.post(
        f"{url}/api/collections/_superusers/auth-with-password",
        json={"identity": EMAIL, "password": PASSWORD},
        timeout=30,
    )
    token = ok(answer)["token"]
    return httpx.Client(base_url=url, headers={"Authorization": token}, timeout=30)


def eventually(engine: EngineProcess, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (httpx.HTTPError, AssertionError):
            found = None
        if found:
            return found
        alive = engine.process.poll() is None
        assert alive and time.monotonic() < deadline, f"never true; log:\n{engine.log_tail()}"
        time.sleep(0.2)


def migration_rows(root: Path) -> list[str]:
    with sqlite3.connect(root / "pb_data" / "data.db") as conn:
        rows = [str(r[0]) for r in conn.execute("SELECT file FROM _migrations ORDER BY rowid")]
    conn.close()
    return rows


# ---------------------------------------------------------------------------- content
def make_content(su: httpx.Client) -> dict[str, Any]:
    """Collections, records, a file and a setting, as a user of either engine makes them."""
    authors = ok(
        su.post(
            "/api/collections",
            json={
                "name": "authors",
                "type": "auth",
                "listRule": "",
                "viewRule": "",
                "fields": [{"name": "nick", "type": "text"}],
            },
        )
    )
    ok(
        su.post(
            "/api/collections",
            json={
                "name": "posts",
                "listRule": "",
                "viewRule": "",
                "fields": [
                    {"name": "title", "type": "text", "required": True},
                    {"name": "score", "type": "number"},
                    {"name": "published", "type": "bool"},
                    {"name": "tags", "type": "select", "values": ["a", "b", "c"], "maxSelect": 3},
                    {"name": "meta", "type": "json"},
                    {
                        "name": "author",
                        "type": "relation",
                        "collectionId": authors["id"],
                        "maxSelect": 1,
                    },
                    {"name": "pic", "type": "file", "maxSelect": 1, "maxSize": 1 << 20},
                    {"name": "created", "type": "autodate", "onCreate": True},
                    {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
                ],
                "indexes": ["CREATE INDEX `idx_posts_title` ON `posts` (`title`)"],
            },
        )
    )
    ok(
        su.post(
            "/api/collections",
            json={
                "name": "published_posts",
                "type": "view",
                "listRule": "",
                "viewRule": "",
                "viewQuery": "SELECT p.id, p.title, p.author FROM posts p WHERE p.published = true",
            },
        )
    )
    user = ok(
        su.post(
            "/api/collections/authors/records",
            json={
                "email": USER_EMAIL,
                "password": USER_PASSWORD,
                "passwordConfirm": USER_PASSWORD,
                "nick": "ann",
                "verified": True,
            },
        )
    )
    with_file = ok(
        su.post(
            "/api/collections/posts/records",
            data={
                "title": "with a picture",
                "score": "4.5",
                "published": "true",
                "tags": ["a", "c"],
                "meta": '{"k": [1, 2]}',
                "author": user["id"],
            },
            files={"pic": ("picture.png", PICTURE, "image/png")},
        )
    )
    ok(
        su.post(
            "/api/collections/posts/records",
            json={"title": "a draft", "published": False, "author": user["id"]},
        )
    )
    ok(su.patch("/api/settings", json={"meta": {"appName": APP_NAME}}))
    return {"post_with_file": with_file, "user": user}


def snapshot(su: httpx.Client) -> dict[str, Any]:
    """What an engine serves of the content: collections, records, the view's records."""
    collections = ok(su.get("/api/collections", params={"perPage": 200}))["items"]
    shape = {
        c["name"]: {
            "id": c["id"],
            "type": c["type"],
            "system": c["system"],
            "fields": [(f["id"], f["name"], f["type"]) for f in c["fields"]],
            "indexes": c.get("indexes", []),
            "rules": [c.get(r) for r in ("listRule", "viewRule", "createRule")],
        }
        for c in collections
    }
    records = {
        name: ok(su.get(f"/api/collections/{name}/records", params={"sort": "id"}))["items"]
        for name in ("posts", "authors", "published_posts", "users")
    }
    return {"collections": shape, "records": records}


def user_login(url: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/api/collections/authors/auth-with-password",
        json={"identity": USER_EMAIL, "password": USER_PASSWORD},
    )
    found: dict[str, Any] = ok(answer)
    return found


def check_served(url: str, made: dict[str, Any], expected: dict[str, Any]) -> None:
    """`url` serves the content made elsewhere: same snapshot, the user logs in, the file."""
    su = superuser(url)
    assert snapshot(su) == expected
    settings = ok(su.get("/api/settings"))
    assert settings["meta"]["appName"] == APP_NAME
    login = user_login(url)
    assert login["record"]["id"] == made["user"]["id"] and login["record"]["nick"] == "ann"
    refused = httpx.post(
        f"{url}/api/collections/authors/auth-with-password",
        json={"identity": USER_EMAIL, "password": "not-the-password"},
    )
    assert refused.status_code == 400
    post = made["post_with_file"]
    picture = httpx.get(f"{url}/api/files/posts/{post['id']}/{post['pic']}")
    assert picture.status_code == 200 and picture.content == PICTURE
    # the relation resolves on the other engine (an expand reads the folder's tables)
    expanded = ok(
        su.get(f"/api/collections/posts/records/{post['id']}", params={"expand": "author"})
    )
    assert expanded["expand"]["author"]["email"] == USER_EMAIL


def write_elsewhere(url: str, made: dict[str, Any]) -> dict[str, Any]:
    """The second engine's own write: a record with a file, by the user who logged in."""
    su = superuser(url)
    return ok(
        su.post(
            "/api/collections/posts/records",
            data={"title": "written by the other engine", "published": "true",
                  "author": made["user"]["id"]},
            files={"pic": ("other.gif", OTHER_PICTURE, "image/gif")},
        )
    )  # fmt: skip


def check_write_seen(url: str, written: dict[str, Any]) -> None:
    su = superuser(url)
    seen = ok(su.get(f"/api/collections/posts/records/{written['id']}"))
    assert seen == written
    picture = httpx.get(f"{url}/api/files/posts/{written['id']}/{written['pic']}")
    assert picture.status_code == 200 and picture.content == OTHER_PICTURE
    in_view = ok(su.get("/api/collections/published_posts/records", params={"perPage": 50}))
    assert written["id"] in [r["id"] for r in in_view["items"]]
    # and the engine still writes to it
    ok(su.post("/api/collections/posts/records", json={"title": "and back again"}))


def check_still_there(url: str, expected: dict[str, Any]) -> None:
    """Back on the first engine: the same collections, every record made at first unchanged."""
    now = snapshot(superuser(url))
    assert now["collections"] == expected["collections"]
    for name, records in expected["records"].items():
        current = {r["id"]: r for r in now["records"][name]}
        assert [current.get(r["id"]) for r in records] == records


# ---------------------------------------------------------------------------- both ways
@pytest.mark.parametrize("first", ["pocketfleet", "pocketbase"])
def test_a_data_folder_switches_engines_and_back(tmp_path: Path, first: Engine) -> None:
    second = _other(first)
    root = tmp_path / "instance"
    with fresh(first, root) as engine:
        su = superuser(engine.url)
        made = make_content(su)
        expected = snapshot(su)
        user_token = user_login(engine.url)["token"]
    assert migration_rows(root)[: len(POCKETBASE_ROWS)] == POCKETBASE_ROWS

    with serving(second, root) as engine:
        check_served(engine.url, made, expected)
        # the tokens the first engine issued stay valid: nobody is logged out by a switch
        assert httpx.get(f"{engine.url}/api/settings", headers=su.headers).status_code == 200
        refresh = httpx.post(
            f"{engine.url}/api/collections/authors/auth-refresh",
            headers={"Authorization": user_token},
        )
        assert ok(refresh)["record"]["id"] == made["user"]["id"]
        written = write_elsewhere(engine.url, made)
    with serving(first, root) as engine:
        check_write_seen(engine.url, written)
        check_still_there(engine.url, expected)
    assert migration_rows(root)[: len(POCKETBASE_ROWS)] == POCKETBASE_ROWS


def test_a_backup_of_ours_restores_into_pocketbase(tmp_path: Path) -> None:
    with fresh("pocketfleet", tmp_path / "ours") as ours:
        su = superuser(ours.url)
        made = make_content(su)
        expected = snapshot(su)
        ok(su.post("/api/backups", json={"name": "from_ours.zip"}), 204)
        token = ok(su.post("/api/files/token"))["token"]
        archive = httpx.get(f"{ours.url}/api/backups/from_ours.zip", params={"token": token})
        assert archive.status_code == 200

    with fresh("pocketbase", tmp_path / "theirs") as pocketbase:
        su = superuser(pocketbase.url)
        files = {"file": ("from_ours.zip", archive.content, "application/zip")}
        ok(su.post("/api/backups/upload", files=files), 204)
        ok(su.post("/api/backups/from_ours.zip/restore"), 204)
        # PocketBase restarts itself on the restored folder: our collections appear
        eventually(
            pocketbase, lambda: "posts" in snapshot(superuser(pocketbase.url))["collections"]
        )
        check_served(pocketbase.url, made, expected)
        written = write_elsewhere(pocketbase.url, made)
    rows = migration_rows(tmp_path / "theirs")
    assert rows[: len(POCKETBASE_ROWS)] == POCKETBASE_ROWS

    with serving("pocketfleet", tmp_path / "theirs") as ours:
        check_write_seen(ours.url, written)


# ---------------------------------------------------------------------------- upgrades
def _as_an_earlier_version_left_it(data_db: Path) -> None:
    """No PocketBase migration rows, and `_params` as the engine created it before."""
    with sqlite3.connect(data_db) as conn:
        conn.execute("DELETE FROM _migrations WHERE file LIKE '%.go'")
        settings = conn.execute("SELECT value FROM _params WHERE id = 'settings'").fetchone()[0]
        conn.execute("DROP TABLE _params")
        conn.execute(
            "CREATE TABLE `_params` (`id` TEXT PRIMARY KEY NOT NULL, `value` JSON DEFAULT "
            "NULL, `created` TEXT DEFAULT '' NOT NULL, `updated` TEXT DEFAULT '' NOT NULL)"
        )
        conn.execute(
            "INSERT INTO _params VALUES ('settings', ?, '2024-01-01 00:00:00.000Z', "
            "'2024-01-01 00:00:00.000Z')",
            (settings,),
        )
    conn.close()


def _params_sql(data_db: Path) -> str:
    with sqlite3.connect(data_db) as conn:
        found = conn.execute("SELECT sql FROM sqlite_master WHERE name = '_params'").fetchone()
    conn.close()
    return str(found[0])


def test_a_folder_of_an_earlier_version_is_upgraded_at_start(tmp_path: Path) -> None:
    root = tmp_path / "instance"
    with fresh("pocketfleet", root) as engine:
        made = make_content(superuser(engine.url))
        expected = snapshot(superuser(engine.url))
    data_db = root / "pb_data" / "data.db"
    _as_an_earlier_version_left_it(data_db)
    assert [f for f in migration_rows(root) if f.endswith(".go")] == []

    App(root / "pb_data", readers=1).close()  # what a start of this version does
    assert [f for f in migration_rows(root) if f.endswith(".go")] == POCKETBASE_ROWS
    with sqlite3.connect(data_db) as conn:
        recorded = conn.execute("SELECT file, applied FROM _migrations ORDER BY rowid").fetchall()
    conn.close()
    App(root / "pb_data", readers=1).close()  # the next start changes nothing
    with sqlite3.connect(data_db) as conn:
        again = conn.execute("SELECT file, applied FROM _migrations ORDER BY rowid").fetchall()
    conn.close()
    assert again == recorded
    reference = tmp_path / "reference"
    with fresh("pocketbase", reference):
        pass
    assert _params_sql(data_db).split() == _params_sql(reference / "pb_data" / "data.db").split()
    with serving("pocketbase", root) as pocketbase:
        check_served(pocketbase.url, made, expected)


def test_pocketbases_own_history_is_left_as_it_is(tmp_path: Path) -> None:
    root = tmp_path / "instance"
    with fresh("pocketbase", root):
        pass
    data_db = root / "pb_data" / "data.db"
    with sqlite3.connect(data_db) as conn:  # as a folder of an older PocketBase has it
        conn.execute("DELETE FROM _migrations WHERE file = '1778828400_normalize_indexes.go'")
        conn.execute("INSERT INTO _migrations VALUES ('1700000000_tenant.js', 1)")
        before = conn.execute("SELECT file, applied FROM _migrations ORDER BY rowid").fetchall()
    conn.close()

    App(root / "pb_data", readers=1).close()

    with sqlite3.connect(data_db) as conn:
        after = conn.execute("SELECT file, applied FROM _migrations ORDER BY rowid").fetchall()
    conn.close()
    assert after == before  # PocketBase applies its newer migration itself


def test_a_folder_without_pocketbases_system_schema_gets_no_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "pb_data"
    App(data, readers=1).close()
    with sqlite3.connect(data / "data.db") as conn:
        conn.execute("DELETE FROM _migrations")
        conn.execute("DELETE FROM _collections WHERE name = '_authOrigins'")
    conn.close()

    App(data, readers=1).close()

    assert migration_rows(tmp_path) == []
    assert "system collection _authOrigins" in caplog.text


# ---------------------------------------------------------------------------- file sidecars
def _attrs(root: Path, collection_id: str, record_id: str, name: str) -> bytes:
    return (root / "pb_data" / "storage" / collection_id / record_id / f"{name}.attrs").read_bytes()


def _thumb_attrs(root: Path, record: dict[str, Any], size: str, name: str) -> dict[str, Any]:
    folder = root / "pb_data" / "storage" / record["collectionId"] / record["id"]
    found: dict[str, Any] = json.loads(
        (folder / f"thumbs_{name}" / f"{size}_{name}.attrs").read_bytes()
    )
    return found


def test_pocketbase_serves_our_image_as_an_image_with_thumbnails(tmp_path: Path) -> None:
    """PocketBase reads the `.attrs` sidecars our engine writes (the content type, the original
    name, the md5) as its own: our upload is an inline image there, it makes thumbs of it and
    serves the thumb our engine made; the sidecar of our upload is byte for byte the one
    PocketBase writes for the same upload."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "red").save(buffer, "PNG")
    picture = buffer.getvalue()
    root = tmp_path / "instance"
    upload = {"pic": ("a.png", picture, "image/png")}
    with fresh("pocketfleet", root) as engine:
        su = superuser(engine.url)
        fields = [{"name": "pic", "type": "file", "maxSelect": 1, "thumbs": ["10x10"]}]
        ok(su.post("/api/collections", json={"name": "imgs", "viewRule": "", "fields": fields}))
        record = ok(su.post("/api/collections/imgs/records", files=upload))
        url = f"{engine.url}/api/files/imgs/{record['id']}/{record['pic']}"
        our_thumb = httpx.get(url, params={"thumb": "100x100"})
        assert our_thumb.status_code == 200 and our_thumb.headers["content-type"] == "image/png"
    with serving("pocketbase", root) as pocketbase:
        url = f"{pocketbase.url}/api/files/imgs/{record['id']}/{record['pic']}"
        served = httpx.get(url)
        assert served.status_code == 200 and served.content == picture
        thumb = httpx.get(url, params={"thumb": "10x10"})
        assert Image.open(io.BytesIO(thumb.content)).size == (10, 10)
        assert served.headers["content-type"] == "image/png"
        assert served.headers["content-disposition"].startswith("inline")
        ours = httpx.get(url, params={"thumb": "100x100"})  # the one our engine made
        assert ours.headers["content-type"] == "image/png" and ours.content == our_thumb.content
        theirs = ok(superuser(pocketbase.url).post("/api/collections/imgs/records", files=upload))
        assert httpx.get(f"{pocketbase.url}/api/files/imgs/{theirs['id']}/{theirs['pic']}",
                         params={"thumb": "100x100"}).status_code == 200  # fmt: skip
    assert _attrs(root, record["collectionId"], record["id"], record["pic"]) == _attrs(
        root, theirs["collectionId"], theirs["id"], theirs["pic"]
    )
    our_attrs = _thumb_attrs(root, record, "100x100", record["pic"])
    their_attrs = _thumb_attrs(root, theirs, "100x100", theirs["pic"])
    assert our_attrs["md5"] == base64.b64encode(hashlib.md5(our_thumb.content).digest()).decode()
    assert {**our_attrs, "md5": ""} == {**their_attrs, "md5": ""}


def test_our_engine_reads_and_removes_pocketbases_sidecars(tmp_path: Path) -> None:
    """A file PocketBase stored is served by our engine with the content type of its sidecar
    (a WAV, which content sniffing alone would not name), and removing it through our engine
    removes its sidecars and those of its thumbs too: the record's folder goes."""
    body = bytes(1000)
    wav = (
        b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8)
        + b"data" + struct.pack("<I", len(body)) + body
    )  # fmt: skip
    buffer = io.BytesIO()
    Image.new("RGB", (30, 30), "blue").save(buffer, "PNG")
    root = tmp_path / "instance"
    with fresh("pocketbase", root) as pocketbase:
        su = superuser(pocketbase.url)
        fields = [{"name": "media", "type": "file", "maxSelect": 2}]
        ok(su.post("/api/collections", json={"name": "media", "viewRule": "", "fields": fields}))
        files = [
            ("media", ("tone.wav", wav, "audio/wav")),
            ("media", ("p.png", buffer.getvalue(), "image/png")),
        ]
        record = ok(su.post("/api/collections/media/records", files=files))
        tone, pic = record["media"]
        base = f"{pocketbase.url}/api/files/media/{record['id']}"
        assert httpx.get(f"{base}/{pic}", params={"thumb": "100x100"}).status_code == 200
    folder = root / "pb_data" / "storage" / record["collectionId"] / record["id"]
    assert len(list(folder.rglob("*.attrs"))) == 3  # both files and the thumb
    with serving("pocketfleet", root) as engine:
        served = httpx.get(f"{engine.url}/api/files/media/{record['id']}/{tone}")
        assert served.status_code == 200 and served.content == wav
        assert served.headers["content-type"] == "audio/wav"
        assert served.headers["content-disposition"].startswith("inline")
        su = superuser(engine.url)
        ok(su.patch(f"/api/collections/media/records/{record['id']}", json={"media": []}))
        eventually(engine, lambda: not folder.exists())
