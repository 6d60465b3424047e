"""Activity behind a real Caddy: its access log and its in-flight counts reach the tracker."""

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
from proxy.caddy.sink import CaddyRoutes
from proxy.routes import Route, RouteState, Upstream
from tests.proxy.caddy.conftest import layout_for
from tests.proxy.conftest import Upstream as UpstreamApp
from tests.support.caddy import CaddyServer


@pytest.fixture
async def fed(
    caddy: CaddyServer, upstream: UpstreamApp
) -> AsyncIterator[tuple[ActivityTracker, CaddyActivity]]:
    admin = CaddyAdmin(caddy.admin)
    sink = CaddyRoutes(admin, layout_for(caddy))
    tracker = ActivityTracker()
    activity = CaddyActivity(tracker, admin, sink, poll_s=0.05)
    sink.layout = layout_for(caddy, access_log=await activity.start())
    await sink.replace_all(
        [Route("a.localhost", "a", RouteState.UP, Upstream("127.0.0.1", upstream.port))]
    )
    await sink.set_aliases("a.localhost", ["shop.example.test"])
    yield tracker, activity
    await activity.aclose()
    await sink.aclose()
    await admin.aclose()


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_access_log_counts_requests_of_instance_hosts(
    caddy: CaddyServer, fed: tuple[ActivityTracker, CaddyActivity]
) -> None:
    tracker, activity = fed
    async with httpx.AsyncClient(base_url=f"http://{caddy.http_listen}", trust_env=False) as c:
        for host in ("a.localhost", "a.localhost", "shop.example.test", "nobody.localhost"):
            await c.get("/echo/private?token=secret", headers={"Host": host})
    await wait_until(lambda: tracker.snapshot().get("a.localhost", None) is not None)
    await wait_until(lambda: tracker.snapshot()["a.localhost"].requests == 3)
    seen = tracker.snapshot()
    assert set(seen) == {"a.localhost"}  # the custom domain counts for its instance
    assert seen["a.localhost"].last_request_at > 0
    assert activity.entries == 3


async def test_a_request_in_flight_through_caddy_keeps_the_host_busy(
    caddy: CaddyServer, upstream: UpstreamApp, fed: tuple[ActivityTracker, CaddyActivity]
) -> None:
    tracker, _ = fed
    gate = upstream.sse_gates["busy"] = threading.Event()
    try:
        async with (
            httpx.AsyncClient(timeout=10, trust_env=False) as client,
            client.stream(
                "GET",
                f"http://{caddy.http_listen}/sse/gated?gate=busy",
                headers={"Host": "a.localhost"},
            ) as stream,
        ):
            lines = stream.aiter_lines()
            assert await anext(lines) == "event: first"
            await wait_until(lambda: tracker.in_flight("a.localhost") == 1)
            gate.set()
            async for _ in lines:
                pass
        await wait_until(lambda: tracker.in_flight("a.localhost") == 0)
    finally:
        gate.set()
