"""The body limit and the body read timeout of the apex (API and dashboard), against a real
server with a small limit (`PF_MAX_BODY_BYTES=4096`) and a short timeout; and 50 MB bodies
against one with the default limit, refused early while an instance behind the embedded
proxy keeps answering and `serve`'s memory stays put."""

from __future__ import annotations

import itertools
import json
import select
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from control_plane.settings import Settings
from tests.support.raw_http import chunk, exchange, request_head
from tests.support.server import ServeProcess, running_server, sign_up

LIMIT = 4096


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    env = {"PF_MAX_BODY_BYTES": str(LIMIT), "PF_BODY_READ_TIMEOUT_S": "1"}
    with running_server(env=env) as server:
        yield server


def host(server: ServeProcess) -> str:
    return f"127.0.0.1:{server.port}"


def test_the_default_limit_is_one_mebibyte() -> None:
    assert Settings.model_fields["max_body_bytes"].default == 1024 * 1024


@pytest.mark.parametrize("path", ["/api/accounts", "/api/sessions", "/login", "/api/nowhere"])
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    server: ServeProcess, path: str
) -> None:
    head = request_head(
        "POST", path, host(server), "Content-Type: application/json", "Content-Length: 10485760"
    )
    response = exchange(server.port, head, wait_for_close=True)  # not one byte of the body
    assert response.status == 413
    assert response.json()["code"] == "too_large"
    assert str(LIMIT) in response.json()["detail"]
    assert response.headers["connection"] == "close"
    assert response.closed


def test_a_chunked_body_is_cut_off_at_the_limit(server: ServeProcess) -> None:
    head = request_head(
        "POST",
        "/api/accounts",
        host(server),
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    )
    pieces = [chunk(b" " * 1024) for _ in range(LIMIT // 1024 + 1)]  # one more than allowed
    response = exchange(server.port, head, *pieces, wait_for_close=True)  # never finished
    assert response.status == 413
    assert response.json()["code"] == "too_large"
    assert response.closed


def test_bodies_within_the_limit_pass_declared_or_chunked(server: ServeProcess) -> None:
    body = json.dumps({"email": "limit@example.com", "password": "correct-horse-battery"})
    with server.client() as api:
        json_type = {"Content-Type": "application/json"}
        declared = api.post("/api/accounts", content=body.encode(), headers=json_type)
        assert declared.status_code == 201, declared.text
        chunked = api.post(  # an iterator is sent chunked, without a length
            "/api/sessions",
            content=iter([body[:10].encode(), body[10:].encode()]),
            headers=json_type,
        )
        assert chunked.status_code == 200, chunked.text
        padded = api.post(  # a JSON body just under the limit
            "/api/sessions",
            content=(body + " " * (LIMIT - len(body))).encode(),
            headers=json_type,
        )
        assert padded.status_code == 200, padded.text


def test_a_stalled_body_is_refused_with_408(server: ServeProcess) -> None:
    head = request_head(
        "POST",
        "/api/accounts",
        host(server),
        "Content-Type: application/json",
        "Content-Length: 100",
    )
    response = exchange(server.port, head, b'{"email": ', wait_for_close=True)  # then nothing
    assert response.status == 408
    assert response.json()["code"] == "timeout"
    assert response.closed


def test_instance_hosts_are_not_limited(server: ServeProcess) -> None:
    # instance traffic goes to the embedded proxy, never through the apex's limit
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
        response = client.post(
            "/api/files",
            headers={"Host": f"nothing-here.localhost:{server.port}"},
            content=b"x" * (LIMIT * 4),
        )
    assert response.status_code == 404
    assert "No instance is served at nothing-here.localhost" in response.text


# --- 50 MB bodies against the default limit, with an instance behind the embedded proxy ---

BIG = 50 * 1024 * 1024
PIECE = 64 * 1024
SENDERS = 3  # clients each sending 50 MB bodies, declared and chunked in turn, back to back
ROUNDS = 5  # unloaded and loaded phases in turn: the machine's other load falls on both
PROBES = 20  # requests to the instance in each phase (medians over 100 of each)
# How many times its unloaded median the instance's median may take under that load. The
# proxy shares `serve`'s one event loop with the apex, and the 2 cores with the senders, the
# kernel's loopback copies, the instance and whatever else runs on the machine. Measured:
# `serve` spends ~70% of a core on the refusals (a chunked body is read up to the limit,
# 1 MiB, in 64 KiB pieces); senders aimed at a plain socket server instead already double
# the proxy's latency; the proxy's median goes from 0.7-1.1 ms to 3.3-4.9 ms on a quiet
# machine and to 6.6 ms when other tests run beside this one. Requests queue for a moment
# behind the apex's 64 KiB reads; the ratio fails when the loop is held longer than that
# (a body read or parsed in one go: ~90 ms for 50 MB).
LATENCY_RATIO = 10.0
# The unloaded median is often under a millisecond, where one scheduler slice on a busy
# 2-core machine is already a good part of it: it counts as at least this many seconds.
LATENCY_FLOOR_S = 0.001
# `serve`'s peak RSS may grow this much: less than two 50 MB bodies held (measured: no
# growth of the peak, RSS +10-20 MiB).
RSS_GROWTH_BOUND = 100 * 1024 * 1024


@dataclass
class Upload:
    """One request that tried to send `BIG` body bytes, and what came of it."""

    framing: str  # "declared" (Content-Length) or "chunked"
    status: int
    sent: int  # body bytes the client had handed to its socket when the answer arrived
    yielded: int  # body bytes the body generator had produced by then
    elapsed_s: float  # from the connection to the whole answer


@pytest.fixture(scope="module")
def default_server() -> Iterator[ServeProcess]:
    """A server with the default limit (1 MiB) and read timeout."""
    with running_server() as server:
        yield server


def body_pieces(framing: str, counter: list[int]) -> Iterator[bytes]:
    """`BIG` bytes in `PIECE`-sized pieces, framed; `counter[0]` counts the bytes produced."""
    piece = b" " * PIECE
    framed = chunk(piece) if framing == "chunked" else piece
    for _ in range(BIG // PIECE):
        counter[0] += PIECE
        yield framed
    if framing == "chunked":
        yield b"0\r\n\r\n"


def upload_until_answered(port: int, head: bytes, framing: str, timeout: float = 60) -> Upload:
    """Send `head`, then the body for as long as the server reads it, until its answer has
    come in whole (a status line, headers and `Content-Length` bytes) or the connection ends."""
    counter = [0]
    pieces = body_pieces(framing, counter)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        pending = memoryview(b"")
        sending = True
        sent = 0
        answered_at: tuple[int, int] | None = None  # (sent, yielded) at the first answer byte
        received = b""
        deadline = started + timeout
        while not _whole_response(received) and time.perf_counter() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 1)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                if answered_at is None:
                    answered_at = (sent, counter[0])
                received += data
                sending = False  # an answer before the body is done: the rest is not wanted
            elif writable:
                if not pending:
                    pending = memoryview(next(pieces, b""))
                    if not pending:
                        sending = False
                        continue
                try:
                    written = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    sending = False
                    continue
                sent += written
                pending = pending[written:]
        elapsed = time.perf_counter() - started
    assert answered_at is not None, f"no answer to a {framing} body"
    status = int(received.split(b" ", 2)[1])
    return Upload(framing, status, answered_at[0], answered_at[1], elapsed)


def _whole_response(data: bytes) -> bool:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def memory_of(pid: int) -> dict[str, int]:
    """`VmRSS` and `VmHWM` (peak RSS) of process `pid`, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}


def latencies(instance: httpx.Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = instance.get("/api/health")
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return times


def while_sending_big_bodies(
    port: int, heads: dict[str, bytes], work: Callable[[], None]
) -> list[Upload]:
    """Run `work` while `SENDERS` clients send big bodies back to back (each at least one of
    each framing, the last one ending after `work`); return their uploads."""
    uploads: list[Upload] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def send_big_bodies(first: int) -> None:
        try:
            for round_ in itertools.count(first):
                framing = ("declared", "chunked")[round_ % 2]
                uploads.append(upload_until_answered(port, heads[framing], framing))
                if done.is_set() and round_ > first:
                    return
        except BaseException as error:  # reported by the test's thread
            failures.append(error)

    senders = [threading.Thread(target=send_big_bodies, args=(n,)) for n in range(SENDERS)]
    for sender in senders:
        sender.start()
    try:
        time.sleep(0.01)  # the first bodies are on their way
        work()
    finally:
        done.set()
        for sender in senders:
            sender.join()
    assert not failures, failures
    return uploads


def test_50_mb_bodies_are_refused_early_while_the_proxy_keeps_answering(
    default_server: ServeProcess,
) -> None:
    server = default_server
    assert server.process is not None
    with server.client() as api:
        token = sign_up(api, "bigbodies@example.com")
        api.headers["Authorization"] = f"Bearer {token}"
        assert api.post("/api/instances", json={"name": "probe"}).status_code == 201
        started = api.post("/api/instances/probe/start")
        assert started.status_code == 200, started.text
    declared = request_head(
        "POST",
        "/api/accounts",
        host(server),
        "Content-Type: application/json",
        f"Content-Length: {BIG}",
    )
    chunked = request_head(
        "PUT",
        "/api/instances/probe/env",
        host(server),
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    )
    heads = {"declared": declared, "chunked": chunked}

    unloaded: list[float] = []
    loaded: list[float] = []
    uploads: list[Upload] = []
    with server.instance_client("probe") as instance:
        latencies(instance, 5)  # a warm connection and a warm instance

        def probe_under_load() -> None:
            loaded.extend(latencies(instance, PROBES))

        memory_before = memory_of(server.process.pid)
        for _ in range(ROUNDS):
            unloaded.extend(latencies(instance, PROBES))
            uploads.extend(while_sending_big_bodies(server.port, heads, probe_under_load))
        memory_after = memory_of(server.process.pid)

    assert {upload.framing for upload in uploads} == {"declared", "chunked"}
    for upload in uploads:
        assert upload.status == 413, upload
        # answered while the client still had most of the body to send: what it did send is
        # what the loopback socket buffers take (a few MiB), plus the 1 MiB read of a chunked one
        assert upload.sent < BIG and upload.yielded < BIG, upload
    unloaded_median, loaded_median = statistics.median(unloaded), statistics.median(loaded)
    assert loaded_median <= LATENCY_RATIO * max(unloaded_median, LATENCY_FLOOR_S), (
        f"unloaded median {unloaded_median * 1000:.2f} ms, loaded {loaded_median * 1000:.2f} ms"
    )
    growth = memory_after["VmHWM"] - memory_before["VmRSS"]
    assert growth < RSS_GROWTH_BOUND, (memory_before, memory_after)
