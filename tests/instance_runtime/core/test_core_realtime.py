"""The realtime broker: topics and their options, bounded queues that discard a slow client."""

from __future__ import annotations

import asyncio
import json
import threading
from urllib.parse import quote

from instance_runtime.core.realtime import Broker, Client, Message, parse_options, snakecase


def test_options_are_parsed_as_pocketbase_does() -> None:
    raw = json.dumps(
        {
            "query": {"expand": "a,b", "n": 5, "f": 1.5, "b": True, "o": {}},
            "headers": {"X-Token": 1},
        }
    )
    options = parse_options(f"posts/*?options={quote(raw)}")
    assert dict(options.query) == {"expand": "a,b", "n": "5", "f": "1.5", "b": "true", "o": ""}
    assert dict(options.headers) == {"x_token": "1"}
    assert dict(parse_options("posts/*?options=not-json").query) == {}
    assert snakecase("XAuthToken") == "x_auth_token"


def test_subscriptions_by_prefix() -> None:
    async def run() -> None:
        client = Client()
        client.subscribe("posts/*", "posts/abc?options={}", "", "postsx/*")
        assert set(client.subscriptions()) == {"posts/*", "posts/abc?options={}", "postsx/*"}
        assert set(client.subscriptions_with("posts/*?")) == {"posts/*"}
        assert set(client.subscriptions_with("posts/abc?")) == {"posts/abc?options={}"}
        client.unsubscribe("posts/*")
        assert not client.has_subscription("posts/*")
        client.unsubscribe()
        assert client.subscriptions() == {}

    asyncio.run(run())


def test_a_full_queue_discards_the_client() -> None:
    async def run() -> None:
        broker = Broker(max_queue=2)
        client = broker.new_client()
        broker.register(client)
        assert len(client.id) == 40 and broker.client(client.id) is client
        for i in range(2):
            client.send(Message("t", b"%d" % i))
        assert not client.discarded
        client.send(Message("t", b"overflow"))
        assert client.discarded
        assert await client.next() is None  # the stream ends; queued messages are dropped
        broker.unregister(client.id)
        assert broker.client(client.id) is None and broker.clients() == []

    asyncio.run(run())


def test_send_from_another_thread_reaches_the_loop() -> None:
    async def run() -> None:
        client = Client()
        thread = threading.Thread(target=lambda: client.send(Message("t", b"{}")))
        thread.start()
        thread.join()
        message = await asyncio.wait_for(client.next(), 5)
        assert message == Message("t", b"{}")
        assert message.sse("ID") == b"id:ID\nevent:t\ndata:{}\n\n"

    asyncio.run(run())
