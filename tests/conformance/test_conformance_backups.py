"""Backups through the JS SDK's BackupService on fresh engines of their own (create, list,
download by file token, upload, delete, restore and wait for the server to answer with the
restored data, a bad archive refused and logged, the superuser members of /api/health), and a
backup made by PocketBase restored into our engine: the same data folder format, so its
collections, records, files and superuser serve unchanged."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conformance.harness import EMAIL, PASSWORD, Conformance
from tests.conformance.scenarios import BACKUPS
from tests.support.engines import pocketfleet_runtime_available, running_engine


@pytest.mark.parametrize("scenario", BACKUPS)
def test_backups(isolated: Conformance, engine: str, scenario: str) -> None:
    isolated.check(scenario, engine)


def _superuser(url: str) -> httpx.Client:
    answer = httpx.post(
        f"{url}/api/collections/_superusers/auth-with-password",
        json={"identity": EMAIL, "password": PASSWORD},
    )
    assert answer.status_code == 200, answer.text
    return httpx.Client(base_url=url, headers={"Authorization": answer.json()["token"]}, timeout=30)


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def _eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, "the condition did not become true"
        time.sleep(0.1)


def test_a_pocketbase_backup_restores_into_our_engine(tmp_path: Path) -> None:
    if not pocketfleet_runtime_available():
        pytest.skip("`pocketfleet runtime serve` is not available")
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    with running_engine("pocketbase", tmp_path / "pocketbase", EMAIL, PASSWORD) as pocketbase:
        su = _superuser(pocketbase.url)
        fields = [
            {"name": "title", "type": "text"},
            {"name": "pic", "type": "file", "maxSelect": 1},
        ]
        made = _ok(su.post("/api/collections", json={"name": "notes", "fields": fields}))
        record = _ok(
            su.post(
                "/api/collections/notes/records",
                data={"title": "made by PocketBase"},
                files={"pic": ("p.png", picture)},
            )
        )
        _ok(su.post("/api/backups", json={"name": "from_pocketbase.zip"}), 204)
        token = _ok(su.post("/api/files/token"))["token"]
        archive = httpx.get(
            f"{pocketbase.url}/api/backups/from_pocketbase.zip", params={"token": token}
        ).content
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        names = zipped.namelist()
    assert names[:2] == ["data.db", "auxiliary.db"]
    assert f"storage/{made['id']}/{record['id']}/{record['pic']}" in names

    with running_engine("pocketfleet", tmp_path / "pocketfleet", EMAIL, PASSWORD) as ours:
        su = _superuser(ours.url)
        _ok(su.post("/api/backups/upload", files={"file": ("from_pocketbase.zip", archive)}), 204)
        _ok(su.post("/api/backups/from_pocketbase.zip/restore"), 204)
        # PocketBase's superuser (another id, its own token secret) replaced ours
        restored = _eventually(lambda: _superuser(ours.url))
        notes = _eventually(lambda: _ok(restored.get("/api/collections/notes/records"))["items"])
        assert [(n["id"], n["title"], n["pic"]) for n in notes] == [
            (record["id"], "made by PocketBase", record["pic"])
        ]
        coll = _ok(restored.get("/api/collections/notes"))
        assert coll["id"] == made["id"] and [f["name"] for f in coll["fields"]] == [
            f["name"] for f in made["fields"]
        ]
        pic = restored.get(f"/api/files/notes/{record['id']}/{record['pic']}")
        assert pic.status_code == 200 and pic.content == picture
        assert [b["key"] for b in _ok(restored.get("/api/backups"))] == ["from_pocketbase.zip"]
        _ok(restored.post("/api/collections/notes/records", json={"title": "then by ours"}))
