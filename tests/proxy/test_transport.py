"""The upstream transport against real servers: uvicorn, and raw asyncio TCP servers for the
protocol's corners (an upstream closing connections, informational, close-delimited and
truncated responses, silence, a reader slower than the upstream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
import pytest

from proxy.transport import UpstreamTransport
from tests.support.ports import free_port

if TYPE_CHECKING:
    from tests.proxy.conftest import Upstream as UpstreamApp

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server on a free loopback port running `handler` per connection; yields its URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@asynccontextmanager
async def client(idle_expiry: float = 3.0) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose requests go through an `UpstreamTransport`."""
    transport = UpstreamTransport(idle_expiry=idle_expiry)
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        yield http


async def test_reuses_a_keep_alive_connection(upstream: UpstreamApp) -> None:
    async with client() as http:
        ports = {
            (await http.get(f"http://127.0.0.1:{upstream.port}/echo/k")).json()["client_port"]
            for _ in range(5)
        }
    assert len(ports) == 1


async def test_idle_connections_expire(upstream: UpstreamApp) -> None:
    async with client(idle_expiry=0.05) as http:
        first = (await http.get(f"http://127.0.0.1:{upstream.port}/echo/e")).json()
        await asyncio.sleep(0.2)
        second = (await http.get(f"http://127.0.0.1:{upstream.port}/echo/e")).json()
    assert first["client_port"] != second["client_port"]


def answering_once_then_closing() -> tuple[Handler, list[int]]:
    """A server that answers the first request on each connection, then closes it as soon as
    the next request arrives (an upstream's idle timeout racing a reused connection)."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read(1)
        writer.close()

    return handle, connections


async def test_retries_a_bodiless_request_once_when_the_reused_connection_is_closed() -> None:
    handle, connections = answering_once_then_closing()
    async with raw_server(handle) as url, client() as http:
        assert (await http.get(url)).text == "ok"
        assert (await http.get(url)).text == "ok"
    assert len(connections) == 2


async def test_does_not_retry_a_request_with_a_body() -> None:
    handle, connections = answering_once_then_closing()
    async with raw_server(handle) as url, client() as http:
        assert (await http.get(url)).text == "ok"
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(url, content=b"not to be sent twice")
    assert len(connections) == 1


async def test_skips_informational_responses() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone")
        await writer.drain()
        writer.close()

    async with raw_server(handle) as url, client() as http:
        response = await http.get(url)
    assert (response.status_code, response.text) == (201, "done")
    assert "link" not in response.headers


async def test_a_close_delimited_body_ends_with_the_connection() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the ")
        await writer.drain()
        writer.write(b"end")
        writer.close()

    async with raw_server(handle) as url, client() as http:
        assert (await http.get(url)).text == "until the end"


async def test_a_truncated_body_is_an_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()
        writer.close()

    async with raw_server(handle) as url, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(url)


async def test_read_timeout() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await reader.read()  # never answers; returns when the client gives up
        writer.close()

    async with raw_server(handle) as url, client() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(url, timeout=httpx.Timeout(5, read=0.1))


async def test_connection_refused() -> None:
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{free_port()}/")


async def test_refuses_header_injection(upstream: UpstreamApp) -> None:
    async with client() as http:
        with pytest.raises(httpx.LocalProtocolError):
            await http.get(
                f"http://127.0.0.1:{upstream.port}/echo/i",
                headers={"x-note": "a\r\nx-injected: 1"},
            )


async def test_a_slow_reader_pauses_the_upstream() -> None:
    """The upstream writes 128 MiB as fast as it can; the reader takes nothing for a while.
    Reading from the upstream pauses at a small buffer, so the upstream gets stuck at what
    the sockets' kernel buffers hold, far short of the whole body."""
    total = 128 * 1024 * 1024
    block = b"x" * (1024 * 1024)
    written = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        try:
            while written < total:
                writer.write(block)
                await writer.drain()
                written += len(block)
        except ConnectionError:
            pass
        writer.close()

    async with raw_server(handle) as url, client() as http, http.stream("GET", url) as response:
        await asyncio.sleep(0.5)
        stuck_at = written
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
    assert stuck_at < total // 4
    assert received == total
