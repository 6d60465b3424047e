"""The realtime broker (PocketBase's `tools/subscriptions`): clients, their topics, their queues.

Contract:

- The broker knows nothing of auth, rules or records: it holds `Client`s by id; whoever sends
  an event decides, per client, what (if anything) that client may receive.
- `Client` has a random 40-character `id`, its `subscriptions` (topic -> `SubscriptionOptions`,
  the `?options={"query": {...}, "headers": {...}}` of the topic parsed as PocketBase does:
  values stringified, header names snake_cased), and a `store` for what the HTTP layer keeps
  with it (its auth, its address). `subscribe(*topics)` adds topics (empty ones are skipped),
  `unsubscribe(*topics)` removes them (no argument: all); `subscriptions_with(*prefixes)` are
  the topics `t` with `(t + "?").startswith(prefix)` for one of the prefixes.
- `client.send(message)` queues a `Message` for the client's stream without ever waiting: the
  queue is bounded (`max_queue`), and a client whose queue is full is discarded (its stream
  ends; the SDK reconnects). It is safe from any thread (the message is handed to the loop
  the client was created on). `await client.next()` is the next message, None once discarded.
- `Broker.register`, `unregister(id)` (discards the client), `client(id)` (None when unknown),
  `clients()` (a snapshot list).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import string
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_MAX_QUEUE = 512
_ALPHABET = string.ascii_letters + string.digits


def random_id(length: int = 40) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class Message:
    """One SSE event: `name` is the `event:` line, `data` the `data:` payload (JSON bytes)."""

    name: str
    data: bytes

    def sse(self, event_id: str) -> bytes:
        return b"id:%s\nevent:%s\ndata:%s\n\n" % (
            event_id.encode(),
            self.name.encode(),
            self.data,
        )


@dataclass(frozen=True)
class SubscriptionOptions:
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


_CAMEL_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^\w]+")


def snakecase(name: str) -> str:
    """PocketBase's `inflector.Snakecase` (e.g. `X-Token` -> `x_token`)."""
    text = _NON_WORD.sub(" ", name).strip()
    text = _CAMEL_1.sub(r"\1_\2", text)
    text = _CAMEL_2.sub(r"\1_\2", text)
    return "_".join(text.split()).lower()


def _to_string(value: Any) -> str:
    """Go's `cast.ToString` for JSON values (objects and lists become "")."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return ""


def parse_options(topic: str) -> SubscriptionOptions:
    """The `options` query parameter of a topic (malformed: no options)."""
    try:
        raw = parse_qs(urlsplit(topic).query).get("options", [""])[0]
    except ValueError:
        return SubscriptionOptions()
    if not raw:
        return SubscriptionOptions()
    try:
        parsed = json.loads(raw)
    except ValueError:
        return SubscriptionOptions()
    if not isinstance(parsed, dict):
        return SubscriptionOptions()
    query = parsed.get("query") if isinstance(parsed.get("query"), dict) else {}
    headers = parsed.get("headers") if isinstance(parsed.get("headers"), dict) else {}
    assert isinstance(query, dict) and isinstance(headers, dict)
    return SubscriptionOptions(
        {str(k): _to_string(v) for k, v in query.items()},
        {snakecase(str(k)): _to_string(v) for k, v in headers.items()},
    )


class Client:
    """See the module docstring."""

    def __init__(self, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.id = random_id()
        self.store: dict[str, Any] = {}
        self._subs: dict[str, SubscriptionOptions] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=max_queue)
        self.discarded = False

    def subscribe(self, *topics: str) -> None:
        with self._lock:
            for topic in topics:
                if topic:
                    self._subs[topic] = parse_options(topic)

    def unsubscribe(self, *topics: str) -> None:
        with self._lock:
            if not topics:
                self._subs.clear()
            for topic in topics:
                self._subs.pop(topic, None)

    def has_subscription(self, topic: str) -> bool:
        with self._lock:
            return topic in self._subs

    def subscriptions(self) -> dict[str, SubscriptionOptions]:
        with self._lock:
            return dict(self._subs)

    def subscriptions_with(self, *prefixes: str) -> dict[str, SubscriptionOptions]:
        with self._lock:
            return {
                topic: options
                for topic, options in self._subs.items()
                if any((topic + "?").startswith(prefix) for prefix in prefixes)
            }

    def send(self, message: Message) -> None:
        if self.discarded:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._put(message)
        else:
            self._loop.call_soon_threadsafe(self._put, message)

    def _put(self, message: Message) -> None:
        if self.discarded:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.discard()

    def discard(self) -> None:
        """End the client's stream (from the loop's thread)."""
        if self.discarded:
            return
        self.discarded = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def next(self) -> Message | None:
        if self.discarded and self._queue.empty():
            return None
        return await self._queue.get()


class Broker:
    """See the module docstring."""

    def __init__(self, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.max_queue = max_queue
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()

    def new_client(self) -> Client:
        return Client(max_queue=self.max_queue)

    def register(self, client: Client) -> None:
        with self._lock:
            self._clients[client.id] = client

    def unregister(self, client_id: str) -> None:
        with self._lock:
            client = self._clients.pop(client_id, None)
        if client is not None:
            client.discard()

    def client(self, client_id: str) -> Client | None:
        with self._lock:
            return self._clients.get(client_id)

    def clients(self) -> list[Client]:
        with self._lock:
            return list(self._clients.values())

    def __len__(self) -> int:
        return len(self._clients)
