"""Throughput and latency of the embedded proxy against the instance it fronts.

Starts the real PocketBase on a free loopback port, and the embedded proxy the way production
runs it (its own process, uvicorn with uvloop and httptools when installed, no access log) with
one route `bench.localhost` to that PocketBase; then loads `GET /api/health` directly and
through the proxy with the same number of concurrent clients (see `bench/_load.py`) and prints
both, with the ratio proxy / direct.

    .venv/bin/python bench/proxy_throughput.py [--concurrency 16] [--duration 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from _load import format_table, measure

from proxy.activity import ActivityTracker
from proxy.embedded import EmbeddedProxy
from proxy.routes import Route, RouteState, RouteTable, Upstream

POCKETBASE = Path(sys.executable).with_name("pocketbase")
HOST = "bench.localhost"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str, process: subprocess.Popen[bytes], headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, headers=headers, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r} did not become healthy at {url}")
        time.sleep(0.05)


@contextmanager
def process(command: list[str], health_url: str, headers: dict[str, str]) -> Iterator[None]:
    """Run `command` until the block ends; it is ready once `health_url` answers 200."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(health_url, child, headers)
        yield
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def pocketbase_command(root: Path, port: int) -> list[str]:
    command = [str(POCKETBASE), "serve", "--http", f"127.0.0.1:{port}"]
    for flag, name in [
        ("--dir", "pb_data"),
        ("--migrationsDir", "pb_migrations"),
        ("--hooksDir", "pb_hooks"),
        ("--publicDir", "pb_public"),
    ]:
        (root / name).mkdir()
        command += [flag, str(root / name)]
    return command


def serve_proxy(port: int, upstream_port: int) -> None:
    """Serve the embedded proxy with one route `HOST -> 127.0.0.1:upstream_port` (blocks)."""
    table = RouteTable()
    upstream = Upstream("127.0.0.1", upstream_port)
    asyncio.run(table.replace_all([Route(HOST, "bench", RouteState.UP, upstream)]))
    uvicorn.run(
        EmbeddedProxy(table, ActivityTracker()),
        host="127.0.0.1",
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="on",
        proxy_headers=False,
        access_log=False,
        log_level="warning",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each")
    parser.add_argument(
        "--tool",
        choices=["wrk", "httpx"],
        default=None,
        help="load generator (default: wrk if installed)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--serve-proxy",
        nargs=2,
        type=int,
        metavar=("PORT", "UPSTREAM_PORT"),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    if args.serve_proxy:
        serve_proxy(*args.serve_proxy)
        return

    pb_port, proxy_port = free_port(), free_port()
    direct = f"http://127.0.0.1:{pb_port}/api/health"
    proxied = f"http://127.0.0.1:{proxy_port}/api/health"
    proxy_command = [sys.executable, __file__, "--serve-proxy", str(proxy_port), str(pb_port)]
    with (
        tempfile.TemporaryDirectory(prefix="pf-bench-") as tmp,
        process(pocketbase_command(Path(tmp), pb_port), direct, {}),
        process(proxy_command, proxied, {"Host": HOST}),
    ):
        result = measure(
            direct,
            proxied,
            HOST,
            concurrency=args.concurrency,
            duration_s=args.duration,
            warmup_s=args.warmup,
            tool=args.tool,
        )
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
