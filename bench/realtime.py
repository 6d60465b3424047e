"""Realtime: our runtime (`pocketfleet` engine) against the real PocketBase, same machine.

    .venv/bin/python bench/realtime.py [--subscribers 200] [--rate 20] [--seconds 10]
                                       [--rule ""]

One server at a time (started as `bench/runtime.py` starts them, on a fresh data folder):
`--subscribers` guests open `GET /api/realtime` (raw sockets, one asyncio loop) and subscribe to
`bench_rt/*` (a collection whose `listRule` is `--rule`, "" by default: everyone). Then one
writer creates `--rate` records a second for `--seconds`; every subscriber notes when each
record's `create` event reaches it. Printed per engine: events delivered of those expected, the
delivery latency (from the moment the write request is sent to the moment the event is read)
p50/p95/p99/max, the server's RSS before the subscribers connected and with them subscribed
(after the writes), the RSS per subscriber, and the ratio ours/PocketBase of each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil
from runtime import EMAIL, PASSWORD, Server, start

COLLECTION = "bench_rt"
TOPIC = f"{COLLECTION}/*"
_CLIENT_ID = re.compile(rb'"clientId":"(\w+)"')
_TITLE = re.compile(rb'"title":"w(\d+)"')
GRACE_S = 3.0  # how long subscribers keep listening after the last write


@dataclass
class Result:
    expected: int
    delivered: int
    latencies_ms: list[float]
    rss_idle_mb: float
    rss_subscribed_mb: float
    subscribers: int

    @property
    def per_subscriber_kb(self) -> float:
        return (self.rss_subscribed_mb - self.rss_idle_mb) * 1024 / self.subscribers

    def pct(self, q: float) -> float:
        values = sorted(self.latencies_ms)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q / 100 * len(values)))]


@dataclass
class Subscriber:
    received: dict[int, float] = field(default_factory=dict)  # write number -> when read
    client_id: str = ""


def rss_mb(server: Server) -> float:
    proc = psutil.Process(server.process.pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / (1 << 20)


def _superuser_token(url: str) -> str:
    answer = httpx.post(
        f"{url}/api/collections/_superusers/auth-with-password",
        json={"identity": EMAIL, "password": PASSWORD},
        timeout=30,
    )
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def prepare(server: Server, rule: str) -> None:
    headers = {"Authorization": _superuser_token(server.url)}
    body = {
        "name": COLLECTION,
        "listRule": rule,
        "viewRule": rule,
        "createRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "n", "type": "number"}],
    }
    httpx.post(f"{server.url}/api/collections", json=body, headers=headers).raise_for_status()


async def listen(port: int, sub: Subscriber, connected: asyncio.Event, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(
        b"GET /api/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    buf = b""
    while (found := _CLIENT_ID.search(buf)) is None:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError("the stream closed before PB_CONNECT")
        buf += chunk
    sub.client_id = found.group(1).decode()
    buf = buf[found.end() :]
    connected.set()
    reading = asyncio.ensure_future(reader.read(65536))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return
            chunk = reading.result()
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            end = buf.rfind(b"\n\n")
            if end >= 0:
                for match in _TITLE.finditer(buf, 0, end):
                    sub.received.setdefault(int(match.group(1)), now)
                buf = buf[end + 2 :]
            reading = asyncio.ensure_future(reader.read(65536))
    finally:
        reading.cancel()
        stopping.cancel()
        writer.close()


def write_at_rate(url: str, rate: float, seconds: float, sent: dict[int, float]) -> None:
    """Create `rate` records a second for `seconds` (record `w{i}` sent at `sent[i]`)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        total = int(rate * seconds)
        started = time.monotonic()
        for i in range(total):
            pause = started + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent[i] = time.monotonic()
            answer = client.post(f"/api/collections/{COLLECTION}/records", json={"title": f"w{i}"})
            answer.raise_for_status()


async def measure(server: Server, subscribers: int, rate: float, seconds: float) -> Result:
    port = int(server.url.rsplit(":", 1)[1])
    await asyncio.sleep(1)
    idle = rss_mb(server)
    stop = asyncio.Event()
    subs = [Subscriber() for _ in range(subscribers)]
    events = [asyncio.Event() for _ in subs]
    pairs = zip(subs, events, strict=True)
    tasks = [asyncio.create_task(listen(port, sub, ev, stop)) for sub, ev in pairs]
    await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in events)), timeout=60)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        gate = asyncio.Semaphore(32)

        async def subscribe(sub: Subscriber) -> None:
            async with gate:
                body = {"clientId": sub.client_id, "subscriptions": [TOPIC]}
                (await http.post("/api/realtime", json=body)).raise_for_status()

        await asyncio.gather(*(subscribe(sub) for sub in subs))
    sent: dict[int, float] = {}
    await asyncio.to_thread(write_at_rate, server.url, rate, seconds, sent)
    await asyncio.sleep(GRACE_S)
    subscribed = rss_mb(server)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [
        (when - sent[i]) * 1000 for sub in subs for i, when in sub.received.items() if i in sent
    ]
    return Result(
        expected=len(sent) * subscribers,
        delivered=len(latencies),
        latencies_ms=latencies,
        rss_idle_mb=idle,
        rss_subscribed_mb=subscribed,
        subscribers=subscribers,
    )


def run(subscribers: int, rate: float, seconds: float, rule: str) -> None:
    results: dict[str, Result] = {}
    for name in ("pocketbase", "pocketfleet"):
        server = start(name)
        try:
            prepare(server, rule)
            results[name] = asyncio.run(measure(server, subscribers, rate, seconds))
        finally:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)
    print(
        f"subscribers={subscribers} rate={rate:g}/s seconds={seconds:g} listRule={rule!r} "
        "(one server at a time; latency from sending the write to reading the event)"
    )
    rows: list[tuple[str, Callable[[Result], float], str]] = [
        ("delivered", lambda r: float(r.delivered), "{:.0f}"),
        ("latency p50 ms", lambda r: r.pct(50), "{:.2f}"),
        ("latency p95 ms", lambda r: r.pct(95), "{:.2f}"),
        ("latency p99 ms", lambda r: r.pct(99), "{:.2f}"),
        ("latency max ms", lambda r: max(r.latencies_ms, default=float("nan")), "{:.2f}"),
        ("latency mean ms", lambda r: statistics.fmean(r.latencies_ms or [0.0]), "{:.2f}"),
        ("RSS idle MB", lambda r: r.rss_idle_mb, "{:.1f}"),
        ("RSS subscribed MB", lambda r: r.rss_subscribed_mb, "{:.1f}"),
        ("RSS per subscriber KB", lambda r: r.per_subscriber_kb, "{:.1f}"),
    ]
    pb, us = results["pocketbase"], results["pocketfleet"]
    print(f"{'':24} {'PocketBase':>12} {'ours':>12} {'ours/PB':>8}")
    print(f"{'expected events':24} {pb.expected:12d} {us.expected:12d}")
    for label, get, fmt in rows:
        a, b = get(pb), get(us)
        ratio = b / a if a else float("nan")
        print(f"{label:24} {fmt.format(a):>12} {fmt.format(b):>12} {ratio:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="writes per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rule", default="", help="the collection's listRule")
    args = parser.parse_args()
    run(args.subscribers, args.rate, args.seconds, args.rule)


if __name__ == "__main__":
    main()
