"""Cascaded deletes, auth resets and the realtime hooks, on a real uvicorn server over loopback
(in this process, so that Python hooks can be bound to the app): a cascaded record gets its
model hooks, its success event after the commit and a realtime `delete` judged as PocketBase
judges it (against the committed state, so a rule that goes through the deleted parent still
holds); unlinked references get an `update`; a refused cascade sends nothing; a client whose
auth record goes (by cascade too), whose collection's token secret changes or whose collection
is deleted loses its auth; `on_realtime_connect_request`, `on_realtime_subscribe_request` and
`on_realtime_message_send` see and shape the streams."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from instance_runtime.apis.realtime import realtime_of
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.events import (
    RealtimeConnectRequestEvent,
    RealtimeMessageEvent,
    RealtimeSubscribeRequestEvent,
    RecordEvent,
    RecordSuccessEvent,
)
from instance_runtime.core.realtime import Message
from instance_runtime.server import create_app
from tests.support.ports import free_port
from tests.support.server import scratch_dir

EMAIL = "admin@example.com"
PASSWORD = "admin-pass-1234"
USER_PASSWORD = "member-pass-1"
SETTLE_S = 0.6  # how long a test waits for an event that must not come


@dataclass
class Server:
    url: str
    port: int
    app: App
    data_dir: Path

    def superuser(self) -> httpx.Client:
        answer = httpx.post(
            f"{self.url}/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
        assert answer.status_code == 200, answer.text
        return httpx.Client(
            base_url=self.url, headers={"Authorization": answer.json()["token"]}, timeout=10
        )

    def login(self, coll: str, email: str) -> str:
        answer = httpx.post(
            f"{self.url}/api/collections/{coll}/auth-with-password",
            json={"identity": email, "password": USER_PASSWORD},
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["token"]
        return token

    def subscribe(self, client_id: str, topics: list[str], token: str = "") -> httpx.Response:
        headers = {"Authorization": token} if token else {}
        return httpx.post(
            f"{self.url}/api/realtime",
            json={"clientId": client_id, "subscriptions": topics},
            headers=headers,
        )


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    root = scratch_dir("pf-realtime-cascade-")
    data_dir = root / "pb_data"
    subprocess.run(
        [sys.executable, "-m", "instance_runtime", "superuser", "upsert", EMAIL, PASSWORD,
         "--dir", str(data_dir)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    asgi = create_app(Path(data_dir))
    port = free_port()
    config = uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", port, asgi.state.runtime, data_dir)
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


HOOK_ID = "realtime-cascade-test"  # every handler a test binds; unbound when it ends


@pytest.fixture(autouse=True)
def unbound_hooks(server: Server) -> Iterator[None]:
    yield
    hooks = server.app.hooks
    for chain in (
        hooks.on_record_delete,
        hooks.on_record_update,
        hooks.on_record_after_delete_success,
        hooks.on_record_after_update_success,
        hooks.on_realtime_connect_request,
        hooks.on_realtime_subscribe_request,
        hooks.on_realtime_message_send,
    ):
        chain.unbind(HOOK_ID)


class Stream:
    """A raw `GET /api/realtime` on a socket, and the events it received (`(name, data)`)."""

    def __init__(self, port: int, *, wait_connect: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(
            b"GET /api/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.data = b""
        self.client_id = ""
        if wait_connect:
            found = re.search(rb'data:\{"clientId":"(\w+)"\}', self.wait_for(b"}\n\n"))
            assert found is not None
            self.client_id = found.group(1).decode()

    def wait_for(self, needle: bytes, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{needle!r} not received; got {self.data!r}")
            if not self._read(remaining):
                raise AssertionError(f"stream closed before {needle!r}; got {self.data!r}")
        return self.data

    def _read(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return True
        self.data += chunk
        return bool(chunk)

    def events(self) -> list[tuple[str, Any]]:
        found = re.findall(rb"event:([^\n]*)\ndata:([^\n]*)\n\n", self.data)
        return [(name.decode(), json.loads(data)) for name, data in found]

    def record_events(self, settle: float = SETTLE_S) -> list[tuple[str, str, str]]:
        """`(topic, action, record id)` of every record event, once nothing came for `settle`."""
        while True:
            before = len(self.data)
            self._read(settle)
            if len(self.data) == before:
                break
        return sorted(
            (name, data["action"], data["record"]["id"])
            for name, data in self.events()
            if name != "PB_CONNECT"
        )

    def close(self) -> None:
        self.sock.close()


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _collection(su: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    return _ok(su.post("/api/collections", json=body))


def _user(su: httpx.Client, coll: str, email: str, **extra: Any) -> dict[str, Any]:
    body = {"email": email, "password": USER_PASSWORD, "passwordConfirm": USER_PASSWORD, **extra}
    return _ok(su.post(f"/api/collections/{coll}/records", json=body))


def test_a_cascade_sends_each_record_its_hooks_and_its_realtime_event(server: Server) -> None:
    app = server.app
    with server.superuser() as su:
        users = _collection(su, {"name": "cas_users", "type": "auth", "listRule": ""})
        posts = _collection(
            su,
            {"name": "cas_posts", "type": "base", "listRule": "owner = @request.auth.id",
             "fields": [{"name": "title", "type": "text"},
                        {"name": "owner", "type": "relation", "collectionId": users["id"],
                         "maxSelect": 1}]},
        )  # fmt: skip
        # a rule through the parent: inside the transaction the parent is already gone
        _collection(
            su,
            {"name": "cas_comments", "type": "base", "listRule": "post.owner = @request.auth.id",
             "fields": [{"name": "title", "type": "text"},
                        {"name": "post", "type": "relation", "collectionId": posts["id"],
                         "maxSelect": 1, "cascadeDelete": True},
                        {"name": "doc", "type": "file", "maxSelect": 1}]},
        )  # fmt: skip
        _collection(
            su,
            {"name": "cas_links", "type": "base", "listRule": "",
             "fields": [{"name": "title", "type": "text"},
                        {"name": "posts", "type": "relation", "collectionId": posts["id"],
                         "maxSelect": 5},
                        {"name": "updated", "type": "autodate", "onCreate": True,
                         "onUpdate": True}]},
        )  # fmt: skip
        alice = _user(su, "cas_users", "alice@example.com")
        _user(su, "cas_users", "bob@example.com")
        post = _ok(su.post("/api/collections/cas_posts/records",
                           json={"title": "p", "owner": alice["id"]}))  # fmt: skip
        other = _ok(su.post("/api/collections/cas_posts/records",
                            json={"title": "q", "owner": alice["id"]}))  # fmt: skip
        c1 = _ok(
            su.post(
                "/api/collections/cas_comments/records",
                data={"title": "c1", "post": post["id"]},
                files=[("doc", ("note.txt", b"hello"))],
            )
        )
        c2 = _ok(su.post("/api/collections/cas_comments/records",
                         json={"title": "c2", "post": post["id"]}))  # fmt: skip
        kept = _ok(su.post("/api/collections/cas_comments/records",
                           json={"title": "kept", "post": other["id"]}))  # fmt: skip
        link = _ok(su.post("/api/collections/cas_links/records",
                           json={"title": "l", "posts": [post["id"], other["id"]]}))  # fmt: skip
        folder = server.data_dir / "storage" / c1["collectionId"] / c1["id"]
        assert (folder / c1["doc"]).is_file()

        deleting: list[tuple[str, str]] = []
        deleted: list[tuple[str, str]] = []
        rows_left: list[int] = []
        updating: list[tuple[str, Any]] = []
        updated: list[tuple[str, Any]] = []

        def on_delete(e: RecordEvent) -> Any:
            deleting.append((e.collection.name, e.record["id"]))
            return e.next()

        def on_deleted(e: RecordSuccessEvent) -> Any:
            # after the commit: the row is gone for every reader
            sql = f"SELECT COUNT(*) FROM {e.collection.name} WHERE id = ?"
            rows_left.append(
                app.db.read_sync(lambda conn: conn.execute(sql, (e.record["id"],)).fetchone()[0])
            )
            deleted.append((e.collection.name, e.record["id"]))
            return e.next()

        def on_update(e: RecordEvent) -> Any:
            updating.append((e.collection.name, e.record.get("posts")))
            return e.next()

        def on_updated(e: RecordSuccessEvent) -> Any:
            updated.append((e.collection.name, e.record.get("posts")))
            return e.next()

        app.hooks.on_record_delete.bind(on_delete, id=HOOK_ID)
        app.hooks.on_record_after_delete_success.bind(on_deleted, id=HOOK_ID)
        app.hooks.on_record_update.bind(on_update, id=HOOK_ID)
        app.hooks.on_record_after_update_success.bind(on_updated, id=HOOK_ID)

        as_alice, as_bob = Stream(server.port), Stream(server.port)
        try:
            topics = ["cas_posts/*", "cas_comments/*", "cas_links/*"]
            alice_token = server.login("cas_users", "alice@example.com")
            bob_token = server.login("cas_users", "bob@example.com")
            assert server.subscribe(as_alice.client_id, topics, alice_token).status_code == 204
            assert server.subscribe(as_bob.client_id, topics, bob_token).status_code == 204
            assert su.delete(f"/api/collections/cas_posts/records/{post['id']}").status_code == 204

            assert as_alice.record_events() == sorted(
                [
                    ("cas_comments/*", "delete", c1["id"]),
                    ("cas_comments/*", "delete", c2["id"]),
                    ("cas_links/*", "update", link["id"]),
                    ("cas_posts/*", "delete", post["id"]),
                ]
            )
            # bob owns nothing: he sees only the unlinked record (listRule "")
            assert as_bob.record_events() == [("cas_links/*", "update", link["id"])]
            unlinked = next(d for n, d in as_alice.events() if n == "cas_links/*")
            assert unlinked["record"]["posts"] == [other["id"]]
        finally:
            as_alice.close()
            as_bob.close()

        assert deleting[0] == ("cas_posts", post["id"])
        assert sorted(deleting[1:]) == sorted(
            [("cas_comments", c1["id"]), ("cas_comments", c2["id"])]
        )
        # the cascaded records' success events come first, the one that caused them last
        assert sorted(deleted[:2]) == sorted(deleting[1:]) and deleted[2] == deleting[0]
        assert rows_left == [0, 0, 0]
        assert updating == [("cas_links", [other["id"]])] == updated
        assert not folder.exists()  # the cascaded record's files went after the commit
        left = su.get("/api/collections/cas_comments/records").json()["items"]
        assert [item["id"] for item in left] == [kept["id"]]
        assert (
            su.get(f"/api/collections/cas_links/records/{link['id']}").json()["updated"]
            > (link["updated"])
        )


def test_a_refused_cascade_sends_nothing_and_fires_no_success_hook(server: Server) -> None:
    app = server.app
    with server.superuser() as su:
        parents = _collection(
            su, {"name": "ref_parents", "type": "base", "listRule": "",
                 "fields": [{"name": "title", "type": "text"}]},
        )  # fmt: skip
        _collection(
            su,
            {"name": "ref_children", "type": "base", "listRule": "",
             "fields": [{"name": "parent", "type": "relation", "collectionId": parents["id"],
                         "maxSelect": 1, "cascadeDelete": True}]},
        )  # fmt: skip
        children = su.get("/api/collections/ref_children").json()
        # a grandchild that requires its child: deleting the parent must fail as a whole
        _collection(
            su,
            {"name": "ref_grand", "type": "base", "listRule": "",
             "fields": [{"name": "child", "type": "relation", "collectionId": children["id"],
                         "maxSelect": 1, "required": True}]},
        )  # fmt: skip
        parent = _ok(su.post("/api/collections/ref_parents/records", json={"title": "p"}))
        child = _ok(su.post("/api/collections/ref_children/records", json={"parent": parent["id"]}))
        _ok(su.post("/api/collections/ref_grand/records", json={"child": child["id"]}))
        succeeded: list[str] = []

        def on_deleted(e: RecordSuccessEvent) -> Any:
            succeeded.append(e.record["id"])
            return e.next()

        app.hooks.on_record_after_delete_success.bind(on_deleted, id=HOOK_ID)
        stream = Stream(server.port)
        try:
            topics = ["ref_parents/*", "ref_children/*", "ref_grand/*"]
            assert server.subscribe(stream.client_id, topics).status_code == 204
            refused = su.delete(f"/api/collections/ref_parents/records/{parent['id']}")
            assert refused.status_code == 400
            assert refused.json()["message"] == (
                "Failed to delete record. Make sure that the record is not part of a required "
                "relation reference."
            )
            assert stream.record_events() == []
        finally:
            stream.close()
        assert succeeded == []
        assert su.get(f"/api/collections/ref_children/records/{child['id']}").status_code == 200


def test_a_client_loses_its_auth_with_its_record_its_secret_or_its_collection(
    server: Server,
) -> None:
    with server.superuser() as su:
        orgs = _collection(su, {"name": "au_orgs", "type": "base"})
        members = _collection(
            su,
            {"name": "au_members", "type": "auth",
             "fields": [{"name": "org", "type": "relation", "collectionId": orgs["id"],
                         "maxSelect": 1, "cascadeDelete": True}]},
        )  # fmt: skip
        org = _ok(su.post("/api/collections/au_orgs/records", json={}))
        _user(su, "au_members", "gone@example.com", org=org["id"])
        _user(su, "au_members", "stays@example.com")
        streams = [Stream(server.port) for _ in range(3)]
        try:
            gone = server.login("au_members", "gone@example.com")
            stays = server.login("au_members", "stays@example.com")
            superuser = str(su.headers["Authorization"])
            tokens = [gone, stays, superuser]
            for stream, token in zip(streams, tokens, strict=True):
                assert server.subscribe(stream.client_id, ["x/*"], token).status_code == 204
            # each client holds its auth: another one is refused
            for stream in streams:
                assert server.subscribe(stream.client_id, ["x/*"]).status_code == 403

            # the member goes by cascade: its client is a guest now, the others are not
            assert su.delete(f"/api/collections/au_orgs/records/{org['id']}").status_code == 204
            assert server.subscribe(streams[0].client_id, ["x/*"]).status_code == 204
            assert server.subscribe(streams[1].client_id, ["x/*"]).status_code == 403

            # a new token secret of the collection: its clients lose their auth
            options = {"authToken": {"secret": "s" * 50, "duration": 604800}}
            _ok(su.patch(f"/api/collections/{members['id']}", json=options))
            assert server.subscribe(streams[1].client_id, ["x/*"]).status_code == 204
            assert server.subscribe(streams[2].client_id, ["x/*"]).status_code == 403

            # the collection deleted: its clients lose their auth (superusers keep theirs)
            stays2 = server.login("au_members", "stays@example.com")
            assert server.subscribe(streams[1].client_id, ["x/*"], stays2).status_code == 204
            assert server.subscribe(streams[1].client_id, ["x/*"]).status_code == 403
            assert su.delete(f"/api/collections/{members['id']}").status_code == 204
            assert server.subscribe(streams[1].client_id, ["x/*"]).status_code == 204
            assert server.subscribe(streams[2].client_id, ["x/*"]).status_code == 403
        finally:
            for stream in streams:
                stream.close()


def test_the_realtime_hooks_shape_connections_subscriptions_and_messages(server: Server) -> None:
    app = server.app
    hooks = app.hooks
    seen: list[str] = []

    async def on_connect(e: RealtimeConnectRequestEvent) -> None:
        if e.info.query.get("refuse"):
            raise ApiError(403, "Not today.")
        e.idle_timeout_s = 1.0
        seen.append(f"connect {e.client.id}")
        await e.next()
        seen.append(f"gone {e.client.id}")

    async def on_subscribe(e: RealtimeSubscribeRequestEvent) -> None:
        e.subscriptions = [t for t in e.subscriptions if not t.startswith("secret")] + ["hk/*"]
        await e.next()

    async def on_message(e: RealtimeMessageEvent) -> None:
        if e.message.name == "PB_CONNECT":
            seen.append("PB_CONNECT sent")
        elif json.loads(e.message.data)["record"]["title"] == "drop":
            return  # not sent
        else:
            e.message = Message(e.message.name, e.message.data.replace(b'"shh"', b'"***"'))
        await e.next()

    hooks.on_realtime_connect_request.bind(on_connect, id=HOOK_ID)
    hooks.on_realtime_subscribe_request.bind(on_subscribe, id=HOOK_ID)
    hooks.on_realtime_message_send.bind(on_message, id=HOOK_ID)

    refused = httpx.get(f"{server.url}/api/realtime", params={"refuse": "1"})
    assert refused.status_code == 403 and refused.json()["message"] == "Not today."

    with server.superuser() as su:
        _collection(su, {"name": "hk", "type": "base", "listRule": "",
                         "fields": [{"name": "title", "type": "text"}]})  # fmt: skip
        stream = Stream(server.port)
        try:
            assert seen == [f"connect {stream.client_id}", "PB_CONNECT sent"]
            assert server.subscribe(stream.client_id, ["secret/*"]).status_code == 204
            client = realtime_of(app).broker.client(stream.client_id)
            assert client is not None and list(client.subscriptions()) == ["hk/*"]
            for title in ("drop", "shh"):
                _ok(su.post("/api/collections/hk/records", json={"title": title}))
            stream.wait_for(b'"***"')
            titles = [d["record"]["title"] for n, d in stream.events() if n == "hk/*"]
            assert titles == ["***"]
            # the handler's idle timeout (1 s) ends the stream, then the handler goes on
            started = time.monotonic()
            stream.wait_for(b"\r\n0\r\n\r\n", timeout=5)
            assert time.monotonic() - started < 3
        finally:
            stream.close()
        deadline = time.monotonic() + 5
        while seen[-1] != f"gone {stream.client_id}":
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
