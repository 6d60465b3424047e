"""The embedded proxy under uvicorn, in front of real upstreams (a Starlette app, PocketBase)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from proxy.routes import Route, RouteState, Upstream
from tests.support.ports import free_port

if TYPE_CHECKING:
    from tests.proxy.conftest import PocketBase, ProxyServer
    from tests.proxy.conftest import Upstream as UpstreamApp


async def route(proxy: ProxyServer, host: str, port: int) -> str:
    await proxy.table.set(Route(host, host, RouteState.UP, Upstream("127.0.0.1", port)))
    return host


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `check()` holds (state changed by the proxy's own thread)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def echoed_headers(body: dict[str, Any]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        headers.setdefault(name, []).append(value)
    return headers


async def test_forwards_method_raw_path_query_and_body(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "echo.localhost", upstream.port)
    target = b"/echo/a%2Fb/./c%20d/../e?x=1&x=2&y=%20&z=%2F"
    response = await client.request(
        "PUT",
        proxy_server.url,
        headers={"Host": host},
        content=b"hello",
        extensions={"target": target},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["method"] == "PUT"
    assert body["raw_path"] == "/echo/a%2Fb/./c%20d/../e"
    assert body["query_string"] == "x=1&x=2&y=%20&z=%2F"
    assert body["body_length"] == 5


async def test_streams_a_large_chunked_request_body(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "upload.localhost", upstream.port)
    block = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256(block * 20).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield block

    response = await client.post(
        f"{proxy_server.url}/echo/upload", headers={"Host": host}, content=body()
    )
    echoed = response.json()
    assert (echoed["body_length"], echoed["body_sha256"]) == (20 * len(block), digest)
    assert echoed_headers(echoed)["transfer-encoding"] == ["chunked"]


async def test_streams_a_large_request_body_of_known_length(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "upload-length.localhost", upstream.port)
    payload = bytes(range(256)) * 4096 * 20
    response = await client.post(
        f"{proxy_server.url}/echo/upload", headers={"Host": host}, content=payload
    )
    echoed = response.json()
    assert echoed["body_length"] == len(payload)
    assert echoed["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert echoed_headers(echoed)["content-length"] == [str(len(payload))]


async def test_streams_a_large_response_body(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "download.localhost", upstream.port)
    size = 20 * 1024 * 1024 + 7
    received = 0
    async with client.stream(
        "GET", f"{proxy_server.url}/sized?n={size}", headers={"Host": host}
    ) as response:
        assert response.headers["content-length"] == str(size)
        async for chunk in response.aiter_raw():
            received += len(chunk)
    assert received == size


async def test_head_response_has_length_and_no_body(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "head.localhost", upstream.port)
    response = await client.head(f"{proxy_server.url}/echo/x", headers={"Host": host})
    assert response.status_code == 200
    assert int(response.headers["content-length"]) > 0
    assert response.content == b""


async def test_compressed_body_passes_untouched(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "gzip.localhost", upstream.port)
    async with client.stream(
        "GET", f"{proxy_server.url}/gzip", headers={"Host": host, "Accept-Encoding": "gzip"}
    ) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert raw == upstream.gzipped


async def test_sets_forwarding_headers_keeps_host_and_drops_hop_by_hop(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    await route(proxy_server, "headers.localhost", upstream.port)
    response = await client.get(
        f"{proxy_server.url}/echo/h",
        headers={
            "Host": "Headers.localhost:8090",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "Connection": "keep-alive, X-Private",
            "X-Private": "secret",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic eDp5",
            "TE": "trailers",
            "X-Custom": "kept",
        },
    )
    headers = echoed_headers(response.json())
    assert headers["host"] == ["Headers.localhost:8090"]
    assert headers["x-forwarded-host"] == ["Headers.localhost:8090"]
    assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-custom"] == ["kept"]
    for dropped in ("x-private", "keep-alive", "proxy-authorization", "te"):
        assert dropped not in headers
    # The upstream connection's own framing, not the client's.
    assert headers.get("connection", ["keep-alive"]) == ["keep-alive"]


async def test_preserves_multiple_set_cookie_headers(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "cookies.localhost", upstream.port)
    response = await client.get(f"{proxy_server.url}/cookies", headers={"Host": host})
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("a=1;")
    assert cookies[1].startswith("b=2;") and "HttpOnly" in cookies[1]


async def test_event_stream_reaches_the_client_before_the_upstream_goes_on(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    """The upstream sends its second event only once the client has the first (or after
    10 s): a proxy that buffered the stream would leave the gate to time out."""
    host = await route(proxy_server, "sse.localhost", upstream.port)
    gate = upstream.sse_gates["unbuffered"] = threading.Event()
    async with client.stream(
        "GET", f"{proxy_server.url}/sse/gated?gate=unbuffered", headers={"Host": host}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        assert [await anext(lines) for _ in range(2)] == ["event: first", "data: 1"]
        assert proxy_server.activity.snapshot()[host].open_streams == 1
        gate.set()
        rest = [line async for line in lines]
    assert upstream.sse_released["unbuffered"] is True
    assert rest == ["", "event: second", "data: 2", ""]
    await eventually(lambda: proxy_server.activity.snapshot()[host].open_streams == 0)


async def test_client_leaving_an_event_stream_closes_the_upstream_stream(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "leaving.localhost", upstream.port)
    closed = upstream.streams_closed["leaving"] = threading.Event()
    async with client.stream(
        "GET", f"{proxy_server.url}/sse/forever?id=leaving", headers={"Host": host}
    ) as response:
        lines = response.aiter_lines()
        assert await anext(lines) == "data: 0"
        assert proxy_server.activity.snapshot()[host].open_streams == 1
    assert await asyncio.to_thread(closed.wait, 5)
    await eventually(lambda: proxy_server.activity.snapshot()[host].open_streams == 0)


async def test_counts_requests_per_host(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "counted.localhost", upstream.port)
    for _ in range(3):
        await client.get(f"{proxy_server.url}/echo/n", headers={"Host": host})
    activity = proxy_server.activity.snapshot()[host]
    assert activity.requests == 3
    assert activity.last_request_at > 0


async def test_unknown_host_is_404_json(
    proxy_server: ProxyServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(
        f"{proxy_server.url}/api/health", headers={"Host": "nope.localhost:8090"}
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "status": 404,
        "message": "No instance is served at nope.localhost.",
        "data": {},
    }
    assert "nope.localhost" not in proxy_server.activity.snapshot()


async def test_stopped_instance_is_503_json(
    proxy_server: ProxyServer, client: httpx.AsyncClient
) -> None:
    await proxy_server.table.set(Route("halted.localhost", "i1", RouteState.STOPPED))
    await proxy_server.table.set(
        Route("broken.localhost", "i2", RouteState.STOPPED, reason="Instance broken failed.")
    )
    halted = await client.get(f"{proxy_server.url}/", headers={"Host": "halted.localhost"})
    broken = await client.get(f"{proxy_server.url}/", headers={"Host": "broken.localhost"})
    assert halted.status_code == broken.status_code == 503
    assert "retry-after" not in halted.headers
    assert halted.json() == {"status": 503, "message": "Instance halted is stopped.", "data": {}}
    assert broken.json()["message"] == "Instance broken failed."


async def test_asleep_instance_is_503_with_retry_after(
    proxy_server: ProxyServer, client: httpx.AsyncClient
) -> None:
    await proxy_server.table.set(Route("sleepy.localhost", "i3", RouteState.ASLEEP))
    response = await client.get(f"{proxy_server.url}/", headers={"Host": "sleepy.localhost"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json() == {"status": 503, "message": "Instance sleepy is asleep.", "data": {}}


async def test_upstream_not_listening_is_502_json(
    proxy_server: ProxyServer, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "gone.localhost", free_port())
    response = await client.post(
        f"{proxy_server.url}/api/x", headers={"Host": host}, content=b"body"
    )
    assert response.status_code == 502
    assert response.json() == {
        "status": 502,
        "message": "Instance gone is not answering.",
        "data": {},
    }


async def _answer_with_the_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = await reader.readexactly(length)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def test_an_upstream_restarting_is_waited_for_then_answers(
    proxy_server: ProxyServer, client: httpx.AsyncClient
) -> None:
    """PocketBase restarts itself when its hooks change: for a moment its port refuses
    connections. The request (not sent yet) reaches it once it listens again."""
    port = free_port()
    host = await route(proxy_server, "restarting.localhost", port)

    async def listen_later() -> asyncio.Server:
        await asyncio.sleep(0.5)
        return await asyncio.start_server(_answer_with_the_body, "127.0.0.1", port)

    later = asyncio.create_task(listen_later())
    response = await client.post(
        f"{proxy_server.url}/api/x", headers={"Host": host}, content=b"kept whole"
    )
    server = await later
    server.close()
    assert response.status_code == 200 and response.content == b"kept whole"


async def test_a_refused_upstream_whose_route_went_down_is_502(
    proxy_server: ProxyServer, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "halting.localhost", free_port())

    async def stop_soon() -> None:
        await asyncio.sleep(0.1)
        await proxy_server.table.set(Route(host, host, RouteState.STOPPED))

    stopping = asyncio.create_task(stop_soon())
    response = await client.get(f"{proxy_server.url}/", headers={"Host": host})
    await stopping
    assert response.status_code == 502
    assert response.json()["message"] == "Instance halting is not answering."


async def test_websocket_handshake_is_refused(
    proxy_server: ProxyServer, upstream: UpstreamApp, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "ws.localhost", upstream.port)
    response = await client.get(
        f"{proxy_server.url}/ws",
        headers={
            "Host": host,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert response.status_code == 403


async def test_pocketbase_health_and_auth_through_the_proxy(
    proxy_server: ProxyServer, pocketbase: PocketBase, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "pb.localhost", pocketbase.port)
    health = await client.get(f"{proxy_server.url}/api/health", headers={"Host": host})
    assert health.status_code == 200
    assert health.json()["code"] == 200
    email, password = pocketbase.superuser
    auth = await client.post(
        f"{proxy_server.url}/api/collections/_superusers/auth-with-password",
        headers={"Host": host},
        json={"identity": email, "password": password},
    )
    assert auth.status_code == 200, auth.text
    assert auth.json()["record"]["email"] == email
    missing = await client.get(
        f"{proxy_server.url}/api/collections/none/records", headers={"Host": host}
    )
    assert missing.status_code == 404
    assert missing.json()["status"] == 404


async def test_pocketbase_realtime_connects_through_the_proxy(
    proxy_server: ProxyServer, pocketbase: PocketBase, client: httpx.AsyncClient
) -> None:
    host = await route(proxy_server, "pb-realtime.localhost", pocketbase.port)
    async with client.stream(
        "GET", f"{proxy_server.url}/api/realtime", headers={"Host": host}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        async for line in response.aiter_lines():
            if not line:
                break
            key, _, value = line.partition(":")
            event[key] = value
        assert proxy_server.activity.snapshot()[host].open_streams == 1
    assert event["event"] == "PB_CONNECT"
    assert orjson.loads(event["data"])["clientId"] == event["id"]
    await eventually(lambda: proxy_server.activity.snapshot()[host].open_streams == 0)
