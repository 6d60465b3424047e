"""Real servers for the proxy tests: uvicorn in background threads, and the real PocketBase.

Every server listens on a free loopback port and is stopped at the end of its fixture's scope.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from proxy.activity import ActivityTracker
from proxy.embedded import EmbeddedProxy
from proxy.routes import RouteTable
from tests.support.ports import free_port

POCKETBASE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "pocketbase"
SUPERUSER = ("root@example.com", "a-long-password-1")
GZIPPED = gzip.compress(b'{"hello": "compressed world"}' * 100)


@contextmanager
def running(app: ASGIApp, **config: Any) -> Iterator[int]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield the port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, **config)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


ServeFn = Callable[..., int]


@pytest.fixture
def serve_asgi() -> Iterator[ServeFn]:
    """`serve_asgi(app, **uvicorn_config) -> port`; each server is stopped after the test."""
    with ExitStack() as stack:
        yield lambda app, **config: stack.enter_context(running(app, **config))


@dataclass
class Upstream:
    """The upstream test app's port and the hooks tests use to observe it."""

    port: int
    gzipped: bytes = GZIPPED
    sse_gates: dict[str, threading.Event] = field(default_factory=dict)
    sse_released: dict[str, bool] = field(default_factory=dict)
    streams_closed: dict[str, threading.Event] = field(default_factory=dict)


def upstream_app(state: Upstream) -> Starlette:
    """Echo, cookies, event streams, sized and compressed bodies."""

    async def echo(request: Request) -> Response:
        digest = hashlib.sha256()
        length = 0
        async for chunk in request.stream():
            digest.update(chunk)
            length += len(chunk)
        return JSONResponse(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode("latin-1"),
                "query_string": request.scope["query_string"].decode("latin-1"),
                "headers": [
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw
                ],
                "client_port": request.scope["client"][1],
                "body_length": length,
                "body_sha256": digest.hexdigest(),
            }
        )

    async def cookies(request: Request) -> Response:
        response = JSONResponse({"ok": True})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2", httponly=True)
        return response

    async def sse_gated(request: Request) -> Response:
        """One event; the next only once the test has set the gate (or after 10 s)."""
        gate_id = request.query_params["gate"]
        gate = state.sse_gates[gate_id]

        async def events() -> AsyncIterator[bytes]:
            yield b"event: first\ndata: 1\n\n"
            state.sse_released[gate_id] = await anyio.to_thread.run_sync(gate.wait, 10)
            yield b"event: second\ndata: 2\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def sse_forever(request: Request) -> Response:
        """An event every 50 ms until the client goes; then the stream's `closed` is set."""
        closed = state.streams_closed[request.query_params["id"]]

        async def events() -> AsyncIterator[bytes]:
            try:
                n = 0
                while True:
                    yield b"data: %d\n\n" % n
                    n += 1
                    await anyio.sleep(0.05)
            finally:
                closed.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def sized(request: Request) -> Response:
        size = int(request.query_params["n"])

        async def body() -> AsyncIterator[bytes]:
            block = b"x" * 65536
            for start in range(0, size, len(block)):
                yield block[: size - start]

        return StreamingResponse(body(), headers={"content-length": str(size)})

    async def compressed(request: Request) -> Response:
        return Response(
            GZIPPED, media_type="application/json", headers={"content-encoding": "gzip"}
        )

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(
        routes=[
            Route("/echo/{rest:path}", echo, methods=methods),
            Route("/cookies", cookies),
            Route("/sse/gated", sse_gated),
            Route("/sse/forever", sse_forever),
            Route("/sized", sized),
            Route("/gzip", compressed),
        ]
    )


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    state = Upstream(port=0)
    with running(upstream_app(state)) as port:
        state.port = port
        yield state


@dataclass
class ProxyServer:
    """The embedded proxy under uvicorn, with the table and tracker it serves."""

    port: int
    table: RouteTable
    activity: ActivityTracker

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def proxy_server() -> Iterator[ProxyServer]:
    table, activity = RouteTable(), ActivityTracker()
    with running(EmbeddedProxy(table, activity), lifespan="on", proxy_headers=False) as port:
        yield ProxyServer(port, table, activity)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client


@dataclass
class PocketBase:
    port: int
    data_dir: Path
    superuser: tuple[str, str] = SUPERUSER


@pytest.fixture(scope="session")
def pocketbase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocketBase]:
    """The real PocketBase on a free port, with a superuser `SUPERUSER`."""
    root = tmp_path_factory.mktemp("pocketbase")
    dirs = {name: root / name for name in ("pb_data", "pb_migrations", "pb_hooks", "pb_public")}
    for path in dirs.values():
        path.mkdir()
    flags = [f"--{key}" for key in ("dir", "migrationsDir", "hooksDir", "publicDir")]
    paths = [str(path) for path in dirs.values()]
    location = [arg for pair in zip(flags, paths, strict=True) for arg in pair]
    subprocess.run(
        [str(POCKETBASE), "superuser", "upsert", *SUPERUSER, *location[:2]],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = (root / "pocketbase.log").open("wb")
    process = subprocess.Popen(
        [str(POCKETBASE), "serve", "--http", f"127.0.0.1:{port}", *location],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "PocketBase did not start: " + (root / "pocketbase.log").read_text()
                )
            time.sleep(0.05)
        yield PocketBase(port, dirs["pb_data"])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
