"""`CaddyRoutes` against a real Caddy: full and incremental pushes, concurrent writers,
custom domains, Caddy being down or restarted, and requests draining from a sleeping host."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from proxy.activity import ActivityTracker
from proxy.caddy.activity import CaddyActivity
from proxy.caddy.admin import CaddyAdmin
from proxy.caddy.config import INSTANCES_PATH, host_id
from proxy.caddy.sink import CaddyRoutes
from proxy.routes import Route, RouteState, Upstream
from tests.proxy.caddy.conftest import layout_for
from tests.proxy.conftest import Upstream as UpstreamApp
from tests.support.caddy import CaddyServer
from tests.support.ports import free_port


def up(host: str, upstream: UpstreamApp) -> Route:
    return Route(host, host.split(".")[0], RouteState.UP, Upstream("127.0.0.1", upstream.port))


@pytest.fixture
async def sink(caddy: CaddyServer) -> AsyncIterator[CaddyRoutes]:
    admin = CaddyAdmin(caddy.admin)
    routes = CaddyRoutes(admin, layout_for(caddy), check_interval_s=0.1)
    await routes.replace_all([])
    routes.start()
    yield routes
    await routes.aclose()
    await admin.aclose()


async def get(caddy: CaddyServer, host: str, path: str = "/echo/x") -> httpx.Response:
    """GET through Caddy. A connection Caddy drops while it swaps in a configuration the sink
    just pushed is tried again (as any client would retry an idempotent request)."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        for attempt in range(10):
            try:
                return await client.get(f"http://{caddy.http_listen}{path}", headers={"Host": host})
            except (httpx.ReadError, httpx.RemoteProtocolError):
                if attempt == 9:
                    raise
                await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def eventually(check: object, timeout: float = 5.0) -> None:
    """Wait (bounded) until the coroutine function `check()` returns true."""
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def instance_ids(caddy: CaddyServer) -> list[str]:
    return [route["@id"] for route in caddy.config(INSTANCES_PATH)]


async def test_full_push_serves_routes_and_refuses_unknown_hosts(
    caddy: CaddyServer, sink: CaddyRoutes, upstream: UpstreamApp
) -> None:
    stopped = Route("b.localhost", "b", RouteState.STOPPED, None, "Instance b is stopped.")
    await sink.replace_all([up("a.localhost", upstream), stopped])

    assert (await get(caddy, "a.localhost")).json()["raw_path"] == "/echo/x"
    refused = await get(caddy, "b.localhost")
    assert refused.status_code == 503 and refused.json()["message"] == "Instance b is stopped."
    unknown = await get(caddy, "nobody.localhost")
    assert unknown.status_code == 404  # not Caddy's empty 200
    assert unknown.json() == {
        "status": 404,
        "message": "No instance is served at nobody.localhost.",
        "data": {},
    }


async def test_incremental_changes_leave_other_routes_alone(
    caddy: CaddyServer, sink: CaddyRoutes, upstream: UpstreamApp
) -> None:
    await sink.replace_all([up("a.localhost", upstream)])
    before = caddy.config(f"/id/{host_id('a.localhost')}")

    await sink.set(up("c.localhost", upstream))  # new host: pushed in the background
    await eventually(lambda: _status(caddy, "c.localhost", 200))
    await sink.remove("c.localhost")
    assert (await get(caddy, "c.localhost")).status_code == 404

    assert caddy.config(f"/id/{host_id('a.localhost')}") == before
    assert instance_ids(caddy) == [host_id("a.localhost")]
    assert sink.restores == 0


async def test_concurrent_writers_never_duplicate_a_host(
    caddy: CaddyServer, sink: CaddyRoutes, upstream: UpstreamApp
) -> None:
    other_admin = CaddyAdmin(caddy.admin)
    other = CaddyRoutes(other_admin, sink.layout)
    try:
        await sink.replace_all([])
        asleep = [Route(f"h{i}.localhost", f"h{i}", RouteState.STOPPED) for i in range(6)]
        # two writers add the same hosts at once: each append is guarded by If-Match
        await asyncio.gather(*(s.set(r) for r in asleep for s in (sink, other)))
        ids = instance_ids(caddy)
        assert sorted(ids) == sorted(host_id(r.host) for r in asleep)
    finally:
        await other.aclose()
        await other_admin.aclose()


async def test_custom_domains_follow_their_host(
    caddy: CaddyServer, sink: CaddyRoutes, upstream: UpstreamApp
) -> None:
    await sink.replace_all([up("a.localhost", upstream)])
    assert (await get(caddy, "shop.example.test")).status_code == 404
    await sink.set_aliases("a.localhost", ["shop.example.test"])
    assert (await get(caddy, "shop.example.test")).status_code == 200
    assert sink.canonical_host("shop.example.test") == "a.localhost"
    await sink.set_aliases("a.localhost", [])
    assert (await get(caddy, "shop.example.test")).status_code == 404


async def test_changes_while_caddy_is_down_land_when_it_is_back(
    caddy: CaddyServer, sink: CaddyRoutes, upstream: UpstreamApp
) -> None:
    await sink.replace_all([up("a.localhost", upstream)])
    caddy.kill()
    try:
        await sink.set(Route("a.localhost", "a", RouteState.STOPPED))  # does not raise
        await sink.set(up("d.localhost", upstream))
    finally:
        caddy.start()  # comes back with its base config only
    started = time.monotonic()
    await eventually(lambda: _status(caddy, "d.localhost", 200), timeout=5.0)
    assert (await get(caddy, "a.localhost")).status_code == 503
    assert time.monotonic() - started < 5.0


async def test_a_restarted_caddy_gets_every_route_back(
    caddy: CaddyServer, sink: CaddyRoutes, upstream: UpstreamApp
) -> None:
    hosts = [f"r{i}.localhost" for i in range(5)]
    await sink.replace_all([up(host, upstream) for host in hosts])
    caddy.kill()
    caddy.start()
    started = time.monotonic()

    async def all_back() -> bool:
        return all([await _status(caddy, host, 200) for host in hosts])

    # bounded wait (the 2-second promise itself is checked end to end, in
    # tests/control_plane/test_caddy_serve.py; this one checks the mechanism)
    await eventually(all_back, timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert sink.restores >= 1


async def test_requests_in_flight_drain_from_a_host_going_to_sleep(
    caddy: CaddyServer, sink: CaddyRoutes, upstream: UpstreamApp
) -> None:
    tracker = ActivityTracker()
    activity = CaddyActivity(tracker, sink.admin, sink, poll_s=60, drain_timeout_s=10)
    sink.on_drain = activity.drain
    activity.on_drained = sink.drained
    await activity.start()
    gate = upstream.sse_gates["drain"] = threading.Event()
    try:
        await sink.replace_all([up("s.localhost", upstream)])
        async with (
            httpx.AsyncClient(timeout=10, trust_env=False) as client,
            client.stream(
                "GET",
                f"http://{caddy.http_listen}/sse/gated?gate=drain",
                headers={"Host": "s.localhost"},
            ) as stream,
        ):
            lines = stream.aiter_lines()
            assert await anext(lines) == "event: first"  # in flight through Caddy now
            await sink.set(Route("s.localhost", "s", RouteState.ASLEEP))
            assert tracker.in_flight("s.localhost") == 1  # seen as soon as `set` returns
            gate.set()
            assert [line async for line in lines if line.startswith("event")] == ["event: second"]
        await eventually(lambda: _zero(tracker, "s.localhost"))
        route = caddy.config(f"/id/{host_id('s.localhost')}")

        async def branch_dropped() -> bool:
            nonlocal route
            route = caddy.config(f"/id/{host_id('s.localhost')}")
            return route["handle"][0]["handler"] == "reverse_proxy"

        await eventually(branch_dropped)
    finally:
        gate.set()
        sink.on_drain = None
        await activity.aclose()


async def _status(caddy: CaddyServer, host: str, status: int) -> bool:
    try:
        return (await get(caddy, host)).status_code == status
    except httpx.HTTPError:
        return False


async def _zero(tracker: ActivityTracker, host: str) -> bool:
    return tracker.in_flight(host) == 0


async def test_an_upstream_restarting_is_dialled_again_then_answers(
    caddy: CaddyServer, sink: CaddyRoutes
) -> None:
    """PocketBase restarts itself when its hooks change; Caddy dials again (`try_duration`)
    and the request reaches it once it listens. (Caddy 2.6.2 does so for requests without a
    body; a POST still gets 502 there, where the embedded proxy retries it too.)"""
    port = free_port()
    await sink.replace_all([Route("r.localhost", "r", RouteState.UP, Upstream("127.0.0.1", port))])

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nback!")
        await writer.drain()
        writer.close()

    async def listen_later() -> asyncio.Server:
        await asyncio.sleep(0.5)
        return await asyncio.start_server(answer, "127.0.0.1", port)

    later = asyncio.create_task(listen_later())
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        response = await client.get(
            f"http://{caddy.http_listen}/api/x", headers={"Host": "r.localhost"}
        )
    (await later).close()
    assert response.status_code == 200 and response.text == "back!"
