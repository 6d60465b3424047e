"""Wake on request in the embedded proxy: a request to an asleep host is held while the waker
runs, then forwarded unchanged to the upstream it returns; a failed or late wake is a 503 with
`Retry-After`. The wakers here are small real implementations of `proxy.wake.Waker`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import orjson

from proxy.activity import ActivityTracker
from proxy.embedded import EmbeddedProxy
from proxy.routes import Route, RouteState, RouteTable, Upstream
from proxy.wake import WakeFailed

if TYPE_CHECKING:
    from tests.proxy.conftest import Upstream as UpstreamApp

HOST = "sleepy.localhost"


class GatedWaker:
    """Wakes the instance (its route goes up) once `release` is set; `held` is set once
    `expected` calls wait."""

    def __init__(self, table: RouteTable, port: int, expected: int) -> None:
        self.table = table
        self.port = port
        self.expected = expected
        self.release = asyncio.Event()
        self.held = asyncio.Event()
        self.calls = 0

    async def wake(self, route: Route) -> Upstream:
        self.calls += 1
        if self.calls == self.expected:
            self.held.set()
        await self.release.wait()
        upstream = Upstream("127.0.0.1", self.port)
        await self.table.set(Route(route.host, route.instance_id, RouteState.UP, upstream))
        return upstream


class FailingWaker:
    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s

    async def wake(self, route: Route) -> Upstream:
        raise WakeFailed("Instance sleepy failed to start; retry in 7 s.", self.retry_after_s)


class NeverWaker:
    async def wake(self, route: Route) -> Upstream:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def asleep_proxy() -> tuple[EmbeddedProxy, RouteTable, ActivityTracker]:
    table, activity = RouteTable(), ActivityTracker()
    await table.set(Route(HOST, "inst1", RouteState.ASLEEP, None, "Instance sleepy is asleep."))
    return EmbeddedProxy(table, activity), table, activity


def client_of(proxy: EmbeddedProxy) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=proxy), base_url=f"http://{HOST}", timeout=10
    )


async def test_held_requests_are_forwarded_unchanged_once_awake(upstream: UpstreamApp) -> None:
    proxy, table, activity = await asleep_proxy()
    waker = GatedWaker(table, upstream.port, expected=5)
    proxy.use_waker(waker, timeout_s=10)
    async with client_of(proxy) as client:
        held = [
            asyncio.create_task(client.post(f"/echo/n{i}?q={i}", content=b"body %d" % i))
            for i in range(5)
        ]
        await asyncio.wait_for(waker.held.wait(), 10)  # every request is held in the waker
        assert not any(task.done() for task in held)
        waker.release.set()
        responses = await asyncio.gather(*held)
    for i, response in enumerate(responses):
        assert response.status_code == 200
        echoed = response.json()
        assert (echoed["raw_path"], echoed["query_string"]) == (f"/echo/n{i}", f"q={i}")
        assert echoed["body_length"] == len(b"body %d" % i)
    assert activity.snapshot()[HOST].requests == 5
    assert activity.in_flight(HOST) == 0
    await proxy.aclose()


async def test_a_failed_wake_is_a_503_with_the_wakers_retry_after() -> None:
    proxy, _, _ = await asleep_proxy()
    proxy.use_waker(FailingWaker(retry_after_s=7), timeout_s=10)
    async with client_of(proxy) as client:
        response = await client.get("/api/health")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert orjson.loads(response.content) == {
        "status": 503,
        "message": "Instance sleepy failed to start; retry in 7 s.",
        "data": {},
    }


async def test_a_wake_past_the_deadline_is_a_503_with_retry_after() -> None:
    proxy, _, _ = await asleep_proxy()
    proxy.use_waker(NeverWaker(), timeout_s=0.2)
    async with client_of(proxy) as client:
        response = await client.get("/api/health")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "took longer than 0.2 s" in response.json()["message"]


async def test_without_a_waker_asleep_is_a_503_with_retry_after() -> None:
    proxy, _, _ = await asleep_proxy()
    async with client_of(proxy) as client:
        response = await client.get("/api/health")
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
