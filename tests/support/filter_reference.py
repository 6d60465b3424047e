"""PocketBase 0.40.6 with `search_dataset` loaded, and our compiler's view of the same data.

    with filter_reference() as ref:
        ref.pb_list("guest", "posts", filter="title ~ 'a'", sort="id")   # PocketBase's answer
        ref.our_list("guest", "posts", filter="title ~ 'a'", sort="id")  # our SQL on its data.db

Our SQL runs on PocketBase's own `data.db` (read-only while it serves), so the storage layout is
exactly PocketBase's. Callers: "su" (superuser), "guest", "user" (u1, a@example.com).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from instance_runtime.core import records
from instance_runtime.core.field_resolver import build_records_query, superuser_only_violation
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.search import FilterError
from tests.support import search_dataset as ds
from tests.support.engines import EngineProcess, start_engine
from tests.support.server import scratch_dir

EMAIL = "admin@example.com"
PASSWORD = "reference-pass-123"
U1 = ds.U[0]


@dataclass
class Reference:
    """PocketBase with the dataset, its clients, and our view of the same database."""

    engine: EngineProcess
    su: httpx.Client
    guest: httpx.Client
    user: httpx.Client
    conn: sqlite3.Connection

    @property
    def schema(self) -> Schema:
        return Schema.load(self.conn)  # reloaded: tests change rules through PocketBase

    def info(self, who: str, **extra: Any) -> RequestInfo:
        schema = self.schema
        info = RequestInfo(**extra)
        if who == "su":
            info.auth = {"id": "su", "collectionName": "_superusers"}
            info.auth_collection = schema.find("_superusers")
        elif who == "user":
            users = schema.find("users")
            assert users is not None
            record = records.find(self.conn, users, U1)
            assert record is not None
            info.auth = {**record, "collectionId": users.id, "collectionName": users.name}
            info.auth_collection = users
        return info

    def client(self, who: str) -> httpx.Client:
        return {"su": self.su, "guest": self.guest, "user": self.user}[who]

    def pb_list(self, who: str, collection: str, **params: str) -> list[str] | str:
        resp = self.client(who).get(
            f"/api/collections/{collection}/records", params={"perPage": "500", **params}
        )
        if resp.status_code != 200:
            return f"ERR {resp.status_code}"
        return [item["id"] for item in resp.json()["items"]]

    def our_list(
        self, who: str, collection: str, *, filter: str = "", sort: str = "", **extra: Any
    ) -> list[str] | str:
        schema = self.schema
        coll = schema.find(collection)
        assert coll is not None
        info = self.info(who, **extra)
        if not info.is_superuser:
            if coll.listRule is None:
                return "ERR 403"
            if superuser_only_violation(filter, sort):
                return "ERR 403"
        try:
            query = build_records_query(
                coll,
                schema,
                info,
                rule=coll.listRule,
                filter=filter,
                sort=sort,
                superuser=info.is_superuser,
            )
        except FilterError:
            return "ERR 400"
        expr = query.build(f'"{coll.name}"."id"')
        return [row[0] for row in self.conn.execute(expr.sql, dict(expr.params))]


def _client(url: str, token: str = "") -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    if token:
        client.headers["Authorization"] = token
    return client


@contextmanager
def filter_reference() -> Iterator[Reference]:
    root = scratch_dir("pf-filter-reference-")
    engine = start_engine("pocketbase", root, EMAIL, PASSWORD)
    try:
        su = _client(engine.url)
        auth = su.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
        su.headers["Authorization"] = auth.json()["token"]
        ds.load(su)
        guest = _client(engine.url)
        token = guest.post(
            "/api/collections/users/auth-with-password",
            json={"identity": "a@example.com", "password": ds.USER_PASSWORD},
        ).json()["token"]
        conn = sqlite3.connect(f"file:{root / 'pb_data' / 'data.db'}?mode=ro", uri=True)
        yield Reference(engine, su, guest, _client(engine.url, token), conn)
        conn.close()
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)
