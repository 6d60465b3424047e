"""Fixtures for backup tests: one moto S3 server (behind a line that can fail) per session,
and helpers to use an instance's PocketBase API record by record."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.s3 import FaultyLine, MotoServer
from tests.support.server import ServeProcess, sign_up

_ids = itertools.count()
PASSWORD = "a-long-password"


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def line(moto: MotoServer) -> Iterator[FaultyLine]:
    with FaultyLine(moto.port) as relay:
        yield relay


@pytest.fixture(scope="module")
def operator(serve: ServeProcess) -> Tenant:
    """The first account of the module's `serve` (its tests start it with
    `PF_FIRST_ACCOUNT_IS_OPERATOR`): an operator."""
    return Tenant(serve)


@pytest.fixture(scope="module")
def tenant(serve: ServeProcess, operator: Tenant) -> Tenant:
    """An ordinary account (signed up after the operator)."""
    return Tenant(serve)


def now() -> datetime:
    return datetime.now(UTC)


def plant(root: Path, rel: str, data: bytes) -> Path:
    """Write `rel` into the instance folder `root` as its tenant would: the file and the
    folders made for it belong to the instance's uid (the owner of `root`)."""
    uid = root.stat().st_uid
    path = root / rel
    missing = [p for p in path.parents if p != root and root in p.parents and not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        os.chown(folder, uid, uid)
    path.write_bytes(data)
    os.chown(path, uid, uid)
    return path


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Tenant:
    """An account, and what it does through the control plane's API."""

    def __init__(self, serve: ServeProcess) -> None:
        self.serve = serve
        # random too: this module is loaded twice (as conftest and by import), two counters
        self.email = f"{unique('owner')}-{os.urandom(4).hex()}@example.com"
        self.api = serve.client()
        self.api.headers["Authorization"] = f"Bearer {sign_up(self.api, self.email)}"

    def create(self, name: str) -> Notes:
        created = self.api.post(
            "/api/instances", json={"name": name, "superuser_password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        self.wait_status(name, "running")
        return Notes(self.serve, name, self.email)

    def instance(self, name: str) -> dict[str, Any]:
        answer = self.api.get(f"/api/instances/{name}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def wait_status(self, name: str, status: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self.instance(name)
            if body["status"] == status or time.monotonic() > deadline:
                assert body["status"] == status, f"{body['status']}: {body['status_reason']}"
                return body
            time.sleep(0.05)

    def backups(self, name: str) -> dict[str, Any]:
        answer = self.api.get(f"/api/instances/{name}/backups")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def snapshot(self, name: str) -> dict[str, Any]:
        answer = self.api.post(f"/api/instances/{name}/backups")
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        assert body["status"] == "good", body
        return body

    def restore(self, name: str, backup_id: str) -> dict[str, Any]:
        answer = self.api.post(f"/api/instances/{name}/backups/{backup_id}/restore")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        assert body["status"] == "done", body
        return body

    def restore_to(self, name: str, at: datetime) -> dict[str, Any]:
        answer = self.api.post(f"/api/instances/{name}/restore", json={"at": at.isoformat()})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def wait_replicated(self, name: str, since: datetime, timeout: float = 60) -> datetime:
        """Until everything committed before `since` is in the replica; the window's end
        then advertised (a moment that restores all of it, and stays in the window)."""
        deadline = time.monotonic() + timeout
        while True:
            to = parse_time(self.backups(name)["restorable_to"])
            if to is not None and to >= since:
                return to
            assert time.monotonic() < deadline, f"{name} not replicated up to {since}"
            time.sleep(0.1)


class Notes:
    """The instance's PocketBase, as its superuser: one collection `notes` (title, body)."""

    def __init__(self, serve: ServeProcess, name: str, email: str) -> None:
        self.name = name
        self.email = email
        self.http = serve.instance_client(name)
        self._token: str | None = None

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            answer = self.http.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": self.email, "password": PASSWORD},
            )
            assert answer.status_code == 200, answer.text
            self._token = answer.json()["token"]
        return {"Authorization": self._token}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """As the superuser; retried after a 401 (a restore may have replaced the token key)
        and, as the proxy's Retry-After asks, after a 503 (an instance still waking)."""
        for _ in range(60):
            answer = self.http.request(method, path, headers=self._auth(), **kwargs)
            if answer.status_code == 401:
                self._token = None
            elif answer.status_code == 503 and "retry-after" in answer.headers:
                time.sleep(0.5)
            else:
                return answer
        return answer

    def setup(self) -> Notes:
        answer = self.request(
            "POST",
            "/api/collections",
            json={
                "name": "notes",
                "type": "base",
                "fields": [{"name": "title", "type": "text"}, {"name": "body", "type": "text"}],
            },
        )
        assert answer.status_code == 200, answer.text
        return self

    def add(self, title: str, body: str = "") -> str:
        answer = self.request(
            "POST", "/api/collections/notes/records", json={"title": title, "body": body}
        )
        assert answer.status_code == 200, answer.text
        record_id: str = answer.json()["id"]
        return record_id

    def remove(self, record_id: str) -> None:
        answer = self.request("DELETE", f"/api/collections/notes/records/{record_id}")
        assert answer.status_code == 204, answer.text

    def all(self) -> dict[str, str]:
        """title -> body of every note."""
        answer = self.request("GET", "/api/collections/notes/records", params={"perPage": 1000})
        assert answer.status_code == 200, answer.text
        return {item["title"]: item["body"] for item in answer.json()["items"]}

    def titles(self) -> set[str]:
        return set(self.all())
