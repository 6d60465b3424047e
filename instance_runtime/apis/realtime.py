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
- Record events (who gets what: `apis.realtime_broadcast`): a create or update concerns the
  client topics (and their auth) of the moment its success event runs, and is judged on a
  reader right after, before the write that saved it returns (`core.app.settle`; as
  PocketBase, whose request judges its broadcast before it answers: otherwise the client's
  next write could commit first and the event be judged on the record as that left it); a
  delete (a cascaded one too: `core.record_write` deletes those through
  `on_record_delete`) is judged inside its transaction just before its row goes, as
  PocketBase's "dry cache", and sent once committed. As PocketBase, a delete's rules and filters
  are judged against the committed state (a reader), so that a cascaded record whose rule goes
  through the record that caused the cascade (already gone inside the transaction) is judged as
  it was; a record the committed state does not hold yet (created in the same transaction) is
  judged inside the transaction. One worker sends the events in commit order.
- The client's auth follows its record (PocketBase's `bindRealtimeEvents`): updated with it,
  cleared when its `tokenKey` changes (a new password or email) or when the record is deleted
  (cascades included), when its collection's `authToken.secret` changes, or when its
  collection is deleted. The client stays connected and may authenticate again with its next
  `POST /api/realtime`.
- Hooks (`core.app_hooks`): `on_realtime_connect_request` wraps a stream's whole life (a
  handler may change its timeouts; raising an `ApiError` before `next()` answers it instead),
  `on_realtime_subscribe_request` wraps the change of topics (after the refusals), and
  `on_realtime_message_send` sees every message written to a stream, `PB_CONNECT` included
  (not calling `next()` drops it; raising ends the stream).
- `Realtime.close()` ends every stream (`server.serve` calls it as the server stops, so that
  open streams do not hold the stop up; the SDK reconnects to the next process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import weakref
from collections.abc import Callable, Mapping
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
    error_response,
    get_app,
    read_body,
    request_auth,
    request_info,
)
from instance_runtime.apis.realtime_broadcast import (
    AUTH_KEY,
    Candidate,
    Outgoing,
    accessible,
    candidates,
    payloads,
)
from instance_runtime.core import oauth2_redirect
from instance_runtime.core.app import App, on_commit, settle
from instance_runtime.core.db import DatabaseClosedError
from instance_runtime.core.errors import ApiError, FieldError, bad_request, forbidden, required
from instance_runtime.core.events import (
    CollectionSuccessEvent,
    RealtimeConnectRequestEvent,
    RealtimeMessageEvent,
    RealtimeSubscribeRequestEvent,
    RecordEvent,
    RecordSuccessEvent,
)
from instance_runtime.core.models import Collection
from instance_runtime.core.realtime import Broker, Message
from instance_runtime.core.records import Record, find
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema

log = logging.getLogger("instance_runtime")

IP_KEY = "pbRealtimeClientIP"
OAUTH2_TOPIC = "@oauth2"


@dataclass
class Timeouts:
    idle_timeout_s: float = 300.0
    max_age_s: float = 1800.0
    keepalive_s: float = 30.0


@dataclass
class _Saved:
    """A committed create or update, and the client topics it concerns."""

    collection: Collection
    record: Record
    action: str
    found: list[Candidate]


# what the worker sends, in order: a delete's messages, a saved record to judge, or its judging
_Queued = _Saved | Outgoing | asyncio.Task[Outgoing]


class Realtime:
    """See the module docstring."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.broker = Broker()
        self.timeouts = Timeouts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Queued] | None = None
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

    def _enqueue(self, item: _Queued) -> None:
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
                elif isinstance(item, _Saved):
                    outgoing = await self._evaluate(item)
                else:
                    outgoing = await item
                for client, message in outgoing:
                    client.send(message)
            except Exception:
                log.exception("realtime: failed to broadcast a record event")

    async def _evaluate(self, saved: _Saved) -> Outgoing:
        coll, record = saved.collection, saved.record
        rid = str(record.get("id", ""))

        def judge(conn: sqlite3.Connection, schema: Schema) -> Outgoing:
            passed = accessible(conn, schema, coll, rid, saved.found)
            return payloads(conn, schema, coll, record, saved.action, passed)

        return await self.app.read(judge)

    # --- hooks ---------------------------------------------------------------------------

    def on_saved(self, event: RecordSuccessEvent) -> None:
        if event.action == "update" and event.collection.is_auth:
            self._refresh_auth(event.collection, event.record)
        if len(self.broker):
            # who may receive it is known now (their auth as it is at this moment, as
            # PocketBase), what they receive is worked out by the worker, on a reader
            coll, record = event.collection, dict(event.record)
            found = candidates(coll, str(record.get("id", "")), self.broker.clients())
            if found:
                self._enqueue(self._judged_now(_Saved(coll, record, event.action, found)))
        event.next()

    def _judged_now(self, saved: _Saved) -> _Saved | asyncio.Task[Outgoing]:
        """On the loop, in the deferred calls of `await app.write`: the judging begun now, which
        the write waits for (the worker sends its outcome in commit order); elsewhere (a write
        from another thread) the worker judges it when it comes to it."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return saved
        if running is not self._loop:
            return saved
        judging = running.create_task(self._evaluate(saved))
        settle(judging)
        return judging

    def on_delete(self, event: RecordEvent) -> Any:
        outgoing = self._dry_cache(event) if len(self.broker) else []
        result = event.next()
        if outgoing:
            on_commit(lambda: self._enqueue(outgoing))
        return result

    def _dry_cache(self, event: RecordEvent) -> Outgoing:
        """The messages of a delete, judged before its row goes (see the module docstring)."""
        coll, record, schema = event.collection, event.record, event.schema
        rid = str(record.get("id", ""))
        found = candidates(coll, rid, self.broker.clients())
        if not found:
            return []

        def judge(conn: sqlite3.Connection) -> list[Candidate] | None:
            if find(conn, coll, rid) is None:
                return None
            return accessible(conn, schema, coll, rid, found)

        passed: list[Candidate] | None = None
        try:
            passed = self.app.db.read_sync(judge)
        except (DatabaseClosedError, RuntimeError, sqlite3.Error):
            passed = None  # stopping, or a table the committed state lacks
        if passed is None:
            passed = accessible(event.conn, schema, coll, rid, found)
        return payloads(event.conn, schema, coll, record, "delete", passed)

    def on_deleted(self, event: RecordSuccessEvent) -> None:
        if event.collection.is_auth:
            self._unset_auth(
                lambda found: _same_auth(found, event.collection, event.record),
            )
        event.next()

    def on_collection_updated(self, event: CollectionSuccessEvent) -> None:
        coll = event.collection
        if coll.is_auth:
            secret = _token_secret(coll)
            self._unset_auth(
                lambda found: found[0].id == coll.id and _token_secret(found[0]) != secret
            )
        event.next()

    def on_collection_deleted(self, event: CollectionSuccessEvent) -> None:
        coll = event.collection
        if coll.is_auth:
            self._unset_auth(lambda found: found[0].id == coll.id)
        event.next()

    def _unset_auth(self, matches: Callable[[Auth], bool]) -> None:
        for client in self.broker.clients():
            found: Auth | None = client.store.get(AUTH_KEY)
            if found is not None and matches(found):
                client.store.pop(AUTH_KEY, None)

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


def _token_secret(coll: Collection) -> Any:
    return coll.option_object("authToken").get("secret")


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
    hooks.on_collection_after_update_success.bind(realtime.on_collection_updated, priority=-99)
    hooks.on_collection_after_delete_success.bind(realtime.on_collection_deleted, priority=-99)
    oauth2_redirect.set_redirect_receiver(app, realtime)
    return realtime


def realtime_of(app: App) -> Realtime:
    found = _states.get(app)
    if found is None:
        raise ApiError(404, "The requested resource wasn't found.")
    return found


_SSE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no"),
    ],
}
_SSE_END = {"type": "http.response.body", "body": b"", "more_body": False}


def _chunk(data: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": True}


class _EventStream(Response):
    """The SSE response of one client, for as long as the stream lives."""

    def __init__(self, realtime: Realtime, ip: str, info: RequestInfo) -> None:
        super().__init__(status_code=200)
        self.realtime = realtime
        self.ip = ip
        self.info = info

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        realtime = self.realtime
        realtime.start()
        client = realtime.broker.new_client()
        client.store[IP_KEY] = self.ip
        timeouts = realtime.timeouts
        event = RealtimeConnectRequestEvent(
            self.info, client, timeouts.idle_timeout_s, timeouts.max_age_s
        )
        started = False

        async def serve(e: RealtimeConnectRequestEvent) -> None:
            nonlocal started
            if not started:
                started = True
                await send(_SSE_START)
            await self._serve(e, receive, send)

        try:
            await realtime.app.hooks.on_realtime_connect_request.trigger(event, serve)
        except ApiError as exc:
            if not started:
                await error_response(exc)(scope, receive, send)
                return
            log.debug("realtime: a connect handler failed after the stream started: %s", exc)
        if not started:  # a handler did not call next(): an empty answer, as PocketBase
            await send(_SSE_START)
        with contextlib.suppress(Exception):
            await send(_SSE_END)

    async def _serve(
        self, event: RealtimeConnectRequestEvent, receive: Receive, send: Send
    ) -> None:
        realtime = self.realtime
        client = event.client
        realtime.broker.register(client)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            realtime.broker.unregister(client.id)

        watcher = asyncio.create_task(watch())
        try:
            connect = Message("PB_CONNECT", orjson.dumps({"clientId": client.id}))
            if await self._write(event, connect, send):
                await self._pump(event, send)
        finally:
            watcher.cancel()
            realtime.broker.unregister(client.id)

    async def _write(
        self, event: RealtimeConnectRequestEvent, message: Message, send: Send
    ) -> bool:
        """Write one message through `on_realtime_message_send`; False: end the stream."""
        hook = self.realtime.app.hooks.on_realtime_message_send
        if not len(hook):
            await send(_chunk(message.sse(event.client.id)))
            return True

        async def write(e: RealtimeMessageEvent) -> None:
            await send(_chunk(e.message.sse(e.client.id)))

        try:
            await hook.trigger(RealtimeMessageEvent(event.info, event.client, message), write)
        except Exception as exc:
            log.debug("realtime: a message was not delivered, the stream ends: %s", exc)
            return False
        return True

    async def _pump(self, event: RealtimeConnectRequestEvent, send: Send) -> None:
        client = event.client
        keepalive_s = self.realtime.timeouts.keepalive_s
        loop = asyncio.get_running_loop()
        max_deadline = loop.time() + event.max_age_s
        idle_deadline = loop.time() + event.idle_timeout_s
        while True:
            remaining = min(max_deadline, idle_deadline) - loop.time()
            if remaining <= 0:
                return
            try:
                # no task or future per message: the queue's get is safe to time out
                async with asyncio.timeout(min(remaining, keepalive_s)):
                    message = await client.next()
            except TimeoutError:
                if loop.time() < min(max_deadline, idle_deadline):
                    await send(_chunk(b":\n\n"))
                continue
            if message is None or not await self._write(event, message, send):
                return
            idle_deadline = loop.time() + event.idle_timeout_s


async def connect(request: Request) -> Response:
    app = get_app(request)
    ip = client_ip(request.scope, app.settings.current)
    return _EventStream(realtime_of(app), ip, await request_info(request, app))


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
    applied = False

    async def apply(e: RealtimeSubscribeRequestEvent) -> None:
        nonlocal applied
        applied = True
        if found is None:
            e.client.store.pop(AUTH_KEY, None)
        else:
            e.client.store[AUTH_KEY] = found
        e.client.unsubscribe()
        e.client.subscribe(*e.subscriptions)

    hook = app.hooks.on_realtime_subscribe_request
    if not len(hook):
        await apply(RealtimeSubscribeRequestEvent(RequestInfo(), client, topics))
    else:
        info = await request_info(request, app)
        await hook.trigger(RealtimeSubscribeRequestEvent(info, client, topics), apply)
    # a handler that did not call next() leaves an empty 200, as PocketBase
    return Response(status_code=204 if applied else 200)


routes = [
    Route("/api/realtime", connect, methods=["GET"]),
    Route("/api/realtime", set_subscriptions, methods=["POST"]),
]
