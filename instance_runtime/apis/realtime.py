"""`/api/realtime`: PocketBase's realtime API over SSE (`apis/realtime.go`), fed by record hooks.

Contract:

- `bind(app)` creates the app's `Realtime` (one `core.realtime.Broker`), binds it to the record
  hooks and installs it as the `@oauth2` redirect receiver (`core.oauth2_redirect`).
- `GET /api/realtime` opens an event stream: first `PB_CONNECT` `{"clientId": ID}` (every
  event's `id:` is the client id), then the client's messages; an SSE comment every
  `keepalive_s` while idle; the stream ends after `idle_timeout_s` without a message (5 min)
  or `max_age_s` in all (30 min, PocketBase's), when the client goes away, or when its queue
  overflows (the broker discards it). The SDK reconnects and resubmits its topics.
- `POST /api/realtime {clientId, subscriptions}` replaces the client's topics (204), with
  PocketBase's refusals: validation 400, unknown client 404 "Missing or invalid client id.",
  another address than the stream's 400 "Invalid realtime client.", a change of auth other than
  guest -> auth 403. The auth of that request becomes the client's.
- Record events: a create or update is evaluated after the commit, a delete inside its
  transaction before the row goes (as PocketBase's "dry cache") and sent once committed; one
  worker sends them in commit order. For each client and each topic it holds (`COLL/ID` ->
  `viewRule`, `COLL/*` and the deprecated `COLL` -> `listRule`, by name or id), the rule and
  the topic's `filter` are evaluated with a `RequestInfo` (context `realtime`) of the client's
  auth and the topic's options; a record that passes is sent as `{record, action}` with the
  topic's `expand` and `fields` applied (`apis.records.enrich`) under the topic's name.
- The client's auth follows its record: updated with it, cleared when its `tokenKey` changes
  or the record is deleted.
- `Realtime.close()` ends every stream (`server.serve` calls it as the server stops, so that
  open streams do not hold the stop up; the SDK reconnects to the next process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from instance_runtime.apis.base import (
    Auth,
    client_ip,
    get_app,
    read_body,
    request_auth,
)
from instance_runtime.apis.records import enrich
from instance_runtime.core import oauth2_redirect, rules
from instance_runtime.core.app import App, on_commit
from instance_runtime.core.errors import ApiError, FieldError, bad_request, forbidden, required
from instance_runtime.core.events import RecordEvent, RecordSuccessEvent
from instance_runtime.core.field_resolver import superuser_only_violation
from instance_runtime.core.models import Collection
from instance_runtime.core.realtime import Broker, Client, Message, SubscriptionOptions
from instance_runtime.core.records import Record, check_rule
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import quote

log = logging.getLogger("instance_runtime")

AUTH_KEY = "auth"
IP_KEY = "pbRealtimeClientIP"
OAUTH2_TOPIC = "@oauth2"

Outgoing = list[tuple[Client, Message]]


@dataclass
class Timeouts:
    idle_timeout_s: float = 300.0
    max_age_s: float = 1800.0
    keepalive_s: float = 30.0


class Realtime:
    """See the module docstring."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.broker = Broker()
        self.timeouts = Timeouts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[Collection, Record, str] | Outgoing] | None = None
        self._worker: asyncio.Task[None] | None = None

    def close(self) -> None:
        """End every client's stream (the server is stopping)."""
        for client in self.broker.clients():
            self.broker.unregister(client.id)

    # --- the worker -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sending worker on the running loop (once)."""
        if self._worker is not None and not self._worker.done():
            return
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._worker = self._loop.create_task(self._work())

    def _enqueue(self, item: tuple[Collection, Record, str] | Outgoing) -> None:
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            queue.put_nowait(item)
        else:
            loop.call_soon_threadsafe(queue.put_nowait, item)

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, list):
                    outgoing = item
                else:
                    outgoing = await self._evaluate(*item)
                for client, message in outgoing:
                    client.send(message)
            except Exception:
                log.exception("realtime: failed to broadcast a record event")

    async def _evaluate(self, coll: Collection, record: Record, action: str) -> Outgoing:
        clients = self.broker.clients()
        return await self.app.read(
            lambda conn, schema: messages(conn, schema, coll, record, action, clients)
        )

    # --- hooks ------------------------------------------------------------------------------

    def on_saved(self, event: RecordSuccessEvent) -> None:
        if event.action == "update" and event.collection.is_auth:
            self._refresh_auth(event.collection, event.record)
        if len(self.broker):
            self._enqueue((event.collection, dict(event.record), event.action))
        event.next()

    def on_delete(self, event: RecordEvent) -> Any:
        clients = self.broker.clients()
        outgoing: Outgoing = []
        if clients:
            outgoing = messages(
                event.conn, event.schema, event.collection, event.record, "delete", clients
            )
        result = event.next()
        if outgoing:
            on_commit(lambda: self._enqueue(outgoing))
        return result

    def on_deleted(self, event: RecordSuccessEvent) -> None:
        if event.collection.is_auth:
            for client in self.broker.clients():
                if _same_auth(client.store.get(AUTH_KEY), event.collection, event.record):
                    client.store.pop(AUTH_KEY, None)
        event.next()

    def _refresh_auth(self, coll: Collection, record: Record) -> None:
        for client in self.broker.clients():
            found: Auth | None = client.store.get(AUTH_KEY)
            if found is None or not _same_auth(found, coll, record):
                continue
            if found[1].get("tokenKey") != record.get("tokenKey"):
                client.store.pop(AUTH_KEY, None)
            else:
                client.store[AUTH_KEY] = (coll, dict(record))

    # --- the @oauth2 redirect receiver ------------------------------------------------------

    def deliver(self, client_id: str, client_ip: str, message: Mapping[str, str]) -> bool:
        client = self.broker.client(client_id)
        if client is None or client.discarded or not client.has_subscription(OAUTH2_TOPIC):
            return False
        try:
            known = client.store.get(IP_KEY) or ""
            if known and known != client_ip:
                return False
            client.send(Message(OAUTH2_TOPIC, orjson.dumps(dict(message))))
            return True
        finally:
            client.unsubscribe(OAUTH2_TOPIC)


def _same_auth(found: Auth | None, coll: Collection, record: Record) -> bool:
    return found is not None and found[0].id == coll.id and found[1].get("id") == record.get("id")


def request_info_for(auth: Auth | None, options: SubscriptionOptions) -> RequestInfo:
    """What rules and `enrich` see of a client's topic: its auth, the topic's options."""
    info = RequestInfo(
        method="GET", context="realtime", query=dict(options.query), headers=dict(options.headers)
    )
    if auth is not None:
        coll, record = auth
        info.auth = {**record, "collectionId": coll.id, "collectionName": coll.name}
        info.auth_collection = coll
    return info


def can_access(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    rule: str | None,
    record_id: str,
    info: RequestInfo,
) -> bool:
    """The rule, then the topic's `filter` (PocketBase's `realtimeCanAccessRecord`)."""
    try:
        if not check_rule(conn, schema, coll, rule, record_id, info):
            return False
        flt = info.query.get("filter", "")
        if not flt:
            return True
        if not info.is_superuser and superuser_only_violation(flt) is not None:
            return False
        frag = rules.build_filter(schema, coll, flt, info, allow_hidden=False)
        table = quote(coll.name)
        sql = f"SELECT 1 FROM {table} {frag.joins} WHERE {table}.id = :_id AND ({frag.sql}) LIMIT 1"
        return conn.execute(sql, {**frag.params, "_id": record_id}).fetchone() is not None
    except (ApiError, sqlite3.Error, ValueError):
        return False


def _payload(
    conn: sqlite3.Connection, schema: Schema, coll: Collection, record: Record, info: RequestInfo
) -> dict[str, Any] | None:
    try:
        return enrich(conn, schema, coll, [record], info)[0]
    except (ApiError, sqlite3.Error, ValueError):
        pass
    # PocketBase sends the record without what it could not expand or pick
    info.query.pop("expand", None)
    try:
        return enrich(conn, schema, coll, [record], info)[0]
    except (ApiError, sqlite3.Error, ValueError):
        info.query.pop("fields", None)
    try:
        return enrich(conn, schema, coll, [record], info)[0]
    except (ApiError, sqlite3.Error, ValueError):
        return None


def messages(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record: Record,
    action: str,
    clients: list[Client],
) -> Outgoing:
    """What each client gets of one record event (see the module docstring)."""
    rid = str(record.get("id", ""))
    by_prefix = (
        (f"{coll.name}/{rid}?", coll.viewRule),
        (f"{coll.id}/{rid}?", coll.viewRule),
        (f"{coll.name}/*?", coll.listRule),
        (f"{coll.id}/*?", coll.listRule),
        (f"{coll.name}?", coll.listRule),
        (f"{coll.id}?", coll.listRule),
    )
    out: Outgoing = []
    for client in clients:
        if client.discarded:
            continue
        auth: Auth | None = client.store.get(AUTH_KEY)
        for prefix, rule in by_prefix:
            for topic, options in client.subscriptions_with(prefix).items():
                info = request_info_for(auth, options)
                if not can_access(conn, schema, coll, rule, rid, info):
                    continue
                data = _payload(conn, schema, coll, record, info)
                if data is None:
                    continue
                body = orjson.dumps({"record": data, "action": action})
                out.append((client, Message(topic, body)))
    return out


# --- HTTP ------------------------------------------------------------------------------------

_states: weakref.WeakKeyDictionary[App, Realtime] = weakref.WeakKeyDictionary()


def bind(app: App) -> Realtime:
    """See the module docstring."""
    realtime = Realtime(app)
    _states[app] = realtime
    hooks = app.hooks
    hooks.on_record_after_create_success.bind(realtime.on_saved, priority=-99)
    hooks.on_record_after_update_success.bind(realtime.on_saved, priority=-99)
    hooks.on_record_delete.bind(realtime.on_delete, priority=99)
    hooks.on_record_after_delete_success.bind(realtime.on_deleted, priority=-99)
    oauth2_redirect.set_redirect_receiver(app, realtime)
    return realtime


def realtime_of(app: App) -> Realtime:
    found = _states.get(app)
    if found is None:
        raise ApiError(404, "The requested resource wasn't found.")
    return found


class _EventStream(Response):
    """The SSE response of one client, for as long as the stream lives."""

    def __init__(self, realtime: Realtime, ip: str) -> None:
        super().__init__(status_code=200)
        self.realtime = realtime
        self.ip = ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        realtime = self.realtime
        realtime.start()
        client = realtime.broker.new_client()
        client.store[IP_KEY] = self.ip
        realtime.broker.register(client)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            realtime.broker.unregister(client.id)

        watcher = asyncio.create_task(watch())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-store"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            connect = Message("PB_CONNECT", orjson.dumps({"clientId": client.id}))
            await send(
                {"type": "http.response.body", "body": connect.sse(client.id), "more_body": True}
            )
            await self._pump(client, send)
        finally:
            watcher.cancel()
            realtime.broker.unregister(client.id)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, client: Client, send: Send) -> None:
        timeouts = self.realtime.timeouts
        loop = asyncio.get_running_loop()
        max_deadline = loop.time() + timeouts.max_age_s
        idle_deadline = loop.time() + timeouts.idle_timeout_s
        pending: asyncio.Task[Message | None] | None = None
        try:
            while True:
                deadline = min(max_deadline, idle_deadline)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                if pending is None:
                    pending = asyncio.ensure_future(client.next())
                done, _ = await asyncio.wait(
                    {pending}, timeout=min(remaining, timeouts.keepalive_s)
                )
                if not done:
                    if loop.time() < min(max_deadline, idle_deadline):
                        await send(
                            {"type": "http.response.body", "body": b":\n\n", "more_body": True}
                        )
                    continue
                message = pending.result()
                pending = None
                if message is None:
                    return
                await send(
                    {
                        "type": "http.response.body",
                        "body": message.sse(client.id),
                        "more_body": True,
                    }
                )
                idle_deadline = loop.time() + timeouts.idle_timeout_s
        finally:
            if pending is not None:
                pending.cancel()


async def connect(request: Request) -> Response:
    app = get_app(request)
    return _EventStream(realtime_of(app), client_ip(request.scope, app.settings.current))


_MAX_CLIENT_ID = 255
_MAX_TOPICS = 1000
_MAX_TOPIC = 2500


def _validate(body: dict[str, Any]) -> tuple[str, list[str]]:
    client_id = body.get("clientId", "")
    topics = body.get("subscriptions") or []
    if not isinstance(client_id, str) or not isinstance(topics, list):
        raise bad_request()
    if not all(isinstance(t, str) for t in topics):
        raise bad_request()
    errors: dict[str, Any] = {}
    if not client_id:
        errors["clientId"] = required()
    elif len(client_id) > _MAX_CLIENT_ID:
        errors["clientId"] = FieldError(
            "validation_length_out_of_range",
            "The length must be between {{.min}} and {{.max}}",
            {"min": 1, "max": _MAX_CLIENT_ID},
        )
    if len(topics) > _MAX_TOPICS:
        errors["subscriptions"] = FieldError(
            "validation_length_too_long",
            "The length must be no more than {{.max}}",
            {"min": 0, "max": _MAX_TOPICS},
        )
    else:
        long = {
            str(i): FieldError(
                "validation_length_too_long",
                "The length must be no more than {{.max}}",
                {"min": 0, "max": _MAX_TOPIC},
            )
            for i, topic in enumerate(topics)
            if len(topic) > _MAX_TOPIC
        }
        if long:
            errors["subscriptions"] = long
    if errors:
        raise bad_request(errors=errors)
    return client_id, [str(t) for t in topics]


async def set_subscriptions(request: Request) -> Response:
    app = get_app(request)
    realtime = realtime_of(app)
    client_id, topics = _validate(await read_body(request))
    client = realtime.broker.client(client_id)
    if client is None or client.discarded:
        raise ApiError(404, "Missing or invalid client id.")
    known = client.store.get(IP_KEY) or ""
    if known and known != client_ip(request.scope, app.settings.current):
        raise bad_request("Invalid realtime client.")
    found = await request_auth(request, app)
    current: Auth | None = client.store.get(AUTH_KEY)
    if current is not None and (found is None or not _same_auth(current, found[0], found[1])):
        raise forbidden("The current and the previous request authorization don't match.")
    if found is None:
        client.store.pop(AUTH_KEY, None)
    else:
        client.store[AUTH_KEY] = found
    client.unsubscribe()
    client.subscribe(*topics)
    return Response(status_code=204)


routes = [
    Route("/api/realtime", connect, methods=["GET"]),
    Route("/api/realtime", set_subscriptions, methods=["POST"]),
]
