"""Benchmark: waking hibernated instances, their idle memory, and a big fleet's control plane.

    .venv/bin/python bench/wake.py [--instances 8] [--wakes 60] [--hibernated 1000]
                                   [--running 50] [--idle-seconds 60] [--log-rows 150000]
    .venv/bin/python bench/wake.py --engines-only [--wakes 30] [--breakdown]

Runs `pocketfleet serve` on a scratch folder (as root, instances run as their own uids) and
prints, in one run:

1. Wake latency of the `pocketbase` engine: N instances with a superuser, a collection of 200
   records and a few hundred requests served (so their request log has rows) are hibernated
   through the API, and the first request to an asleep instance through the proxy (a real
   authenticated record list) is timed, over `--wakes` wakes: p50/p95/p99. Baselines from the
   same run: the same request to a running instance through the proxy, and the real PocketBase
   binary started by hand on a copy of an instance folder until it answers that request.
2. Wake time against the request log's size: one instance's `auxiliary.db` filled with
   `--log-rows` rows within the retention, woken with the index pocketfleet adds and without.
3. The `pocketfleet` engine (if it runs here): idle memory and wake latency through the proxy,
   and, through the process driver directly, start -> first response forked by its zygote
   against cold starts. (Which way instances that run as their own uid start, and why, is
   `control_plane.drivers.zygote.fork_path`, printed by `pocketfleet serve` at start-up; the
   driver section runs as our own user.)
4. Memory of a running idle instance per engine: PSS and USS from /proc/PID/smaps_rollup.
0. With `--engines-only` alone: the wake of a `pocketfleet` instance through the proxy in the
   layout `make run` gives as root (instances as their own uids, in the default sandbox,
   forked by the zygote, woken from their standby), against a `pocketbase` instance's in the
   same run: one of each, with the same data and traffic, their wakes alternating, each
   `--asleep-s` seconds after its hibernation (an instance sleeps a while before its next
   request). Also the control plane's own account of each wake (its event: start of the wake
   to the engine's readiness). With `--breakdown` too: serve logs at info level, and where
   each wake's time goes is printed per engine, p50 and p95 of every span (the hibernator's
   marks, the process driver's account of the start and the embedded proxy's, from serve's
   log), with the control plane's CPU during each wake and, interleaved in the same run, the
   PocketBase binary started by hand on a copy of the instance's folder until it answers.
0. With `--sandbox-compare` (or alone with `--sandbox-only`): the cost of the instance sandbox
   (`control_plane/drivers/sandbox.py`). The same wake series and idle memory of `pocketbase`
   instances, measured in this run on two servers at once, one with `PF_SANDBOX=off` and one
   with the sandbox on, their wakes alternating (the sandboxed memory counts the bwrap that
   holds each sandbox, too), and the ratios.
5. The control plane with `--hibernated` hibernated and `--running` running instances: its
   memory and its CPU while idle for `--idle-seconds`, against the same control plane with no
   instance. The hibernated instances are created through the services straight into the
   control DB (`InstanceService.create`, then moved to `hibernated` by `lifecycle.transition`)
   rather than through HTTP, which would start and stop 1,000 PocketBases first; the running
   ones are created and started through the API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

# Run as a script, this file's folder comes first on sys.path, and bench/proxy.py would shadow
# the `proxy` package the control plane imports: put the repository first instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

BIN = Path(sys.executable).parent
PASSWORD = "bench-password-1"
EMAIL = "bench@example.com"


def free_port(low: int = 17000, high: int = 17999) -> int:
    """A free port below the ephemeral range (a port from there may be taken by an outgoing
    connection between a restart's stop and start)."""
    for port in range(low, high + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):6.1f} ms  p95 {percentile(values, 95):6.1f} ms  "
        f"p99 {percentile(values, 99):6.1f} ms  (n={len(values)})"
    )


def memory_of(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, USS) in bytes, from /proc/PID/smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) * 1024
    uss = fields["Private_Clean"] + fields["Private_Dirty"]
    return fields["Rss"], fields["Pss"], uss


def mb(value: float) -> str:
    return f"{value / 1_048_576:.1f} MB"


def memory_text(memory: tuple[int, int, int]) -> str:
    return f"RSS {mb(memory[0])}, PSS {mb(memory[1])}, USS {mb(memory[2])}"


class Serve:
    """`pocketfleet serve` as a child process, with an API client signed in as an operator."""

    def __init__(self, root: Path, extra_env: dict[str, str], log_level: str = "warning") -> None:
        self.root = root
        self.log_level = log_level
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PF_")}
        self.env.update(
            PF_HTTP=f"127.0.0.1:{self.port}",
            PF_DATA_DIR=str(root / "data"),
            PF_FIRST_ACCOUNT_IS_OPERATOR="true",
            PF_DEFAULT_QUOTA="5000",
            # below the ephemeral ports, away from the default range other pocketfleets here use
            PF_INSTANCE_PORT_RANGE="[12000, 15999]",
        )
        self.env.update(extra_env)
        self.process: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)

    def start(self) -> None:
        log = (self.root / "serve.log").open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "pocketfleet"), "serve", "--log-level", self.log_level],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("pocketfleet serve exited; see serve.log")
            try:
                if self.api.get("/api/health").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("pocketfleet serve did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
            self.process = None

    def down(self) -> None:
        self.stop()
        subprocess.run([str(BIN / "pocketfleet"), "down"], env=self.env, capture_output=True)

    def sign_in(self) -> None:
        creds = {"email": EMAIL, "password": PASSWORD}
        if self.api.post("/api/accounts", json=creds).status_code not in (201, 409):
            raise RuntimeError("sign-up failed")
        token = self.api.post("/api/sessions", json=creds).json()["token"]
        self.api.headers["Authorization"] = f"Bearer {token}"

    def instance(self, name: str) -> httpx.Client:
        headers = {"Host": f"{name}.localhost:{self.port}"}
        return httpx.Client(base_url=self.api.base_url, headers=headers, timeout=60)

    def row(self, name: str) -> dict[str, Any]:
        for row in self.api.get("/api/fleet").json():
            if row["name"] == name:
                return dict(row)
        raise KeyError(name)

    def create(self, name: str, engine: str = "pocketbase") -> dict[str, Any]:
        body = {"name": name, "engine": engine, "superuser_password": PASSWORD}
        created = self.api.post("/api/instances", json=body)
        if created.status_code != 201:
            raise RuntimeError(f"{name} not created: {created.status_code} {created.text}")
        row = self.api.post(f"/api/instances/{name}/start").json()
        if row["status"] != "running":
            raise RuntimeError(f"{name} did not start: {row}")
        return dict(row)


def superuser_token(client: httpx.Client) -> str:
    auth = client.post(
        "/api/collections/_superusers/auth-with-password",
        json={"identity": EMAIL, "password": PASSWORD},
    )
    if auth.status_code != 200:
        raise RuntimeError(f"superuser sign-in: {auth.status_code} {auth.text[:200]}")
    return str(auth.json()["token"])


def fill(client: httpx.Client, records: int, requests: int) -> None:
    """A collection of `records` records, then `requests` reads (they land in the log)."""
    fields = [{"name": "title", "type": "text"}, {"name": "body", "type": "text"}]
    made = client.post("/api/collections", json={"name": "notes", "type": "base", "fields": fields})
    made.raise_for_status()
    for i in range(records):
        body = {"title": f"note {i}", "body": "lorem ipsum " * 20}
        client.post("/api/collections/notes/records", json=body).raise_for_status()
    for i in range(requests):
        client.get("/api/collections/notes/records", params={"page": i % 7 + 1}).raise_for_status()


FIRST_REQUEST = "/api/collections/notes/records?perPage=5"
FOLDERS = (
    ("--dir", "pb_data"),
    ("--migrationsDir", "pb_migrations"),
    ("--hooksDir", "pb_hooks"),
    ("--publicDir", "pb_public"),
)
LOG_DATA = {
    "method": "GET",
    "status": 200,
    "url": FIRST_REQUEST,
    "execTime": 1.2,
    "userAgent": "Mozilla/5.0 bench",
    "remoteIP": "127.0.0.1",
    "auth": "",
}


def timed_request(client: httpx.Client) -> float:
    started = time.perf_counter()
    response = client.get(FIRST_REQUEST)
    took = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text}")
    return took


def hibernate(serve: Serve, name: str) -> None:
    row = serve.api.post(f"/api/instances/{name}/hibernate").json()
    if row["status"] != "hibernated":
        raise RuntimeError(f"{name} did not hibernate: {row}")


def raw_pocketbase_starts(folder: Path, token: str, times: int) -> list[float]:
    """The PocketBase binary started by hand on a copy of `folder` until it answers."""
    copy = Path(tempfile.mkdtemp(prefix="pf-bench-raw-"))
    shutil.copytree(folder, copy / "i", dirs_exist_ok=True)
    try:
        return [hand_started(copy / "i", token) for _ in range(times)]
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def hand_started(root: Path, token: str) -> float:
    """Milliseconds from starting the PocketBase binary by hand on the instance folder `root`
    (no sandbox) until it answers FIRST_REQUEST; it is stopped again."""
    port = free_port()
    argv = [str(BIN / "pocketbase"), "serve", "--http", f"127.0.0.1:{port}"]
    for flag, sub in FOLDERS:
        argv += [flag, str(root / sub)]
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": token}
        ) as client:
            while True:
                try:
                    response = client.get(FIRST_REQUEST)
                    break
                except httpx.TransportError:
                    time.sleep(0.0005)
            took = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, response.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return took


def fill_request_log(auxiliary: Path, rows: int) -> int:
    """Add `rows` request-log rows, all within the retention (the last 24 hours); return how
    many the log holds now."""
    info = auxiliary.stat()
    now = datetime.now(UTC)
    data = json.dumps(LOG_DATA)
    with contextlib.closing(sqlite3.connect(auxiliary)) as db, db:
        batch: list[tuple[str, int, str, str, str]] = []
        for i in range(rows):
            created = now - timedelta(seconds=86_000 * i / rows)
            stamp = created.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
            batch.append((f"bench{i:010d}", 0, "GET " + FIRST_REQUEST, data, stamp))
            if len(batch) == 10_000:
                db.executemany("INSERT INTO _logs VALUES (?, ?, ?, ?, ?)", batch)
                batch.clear()
        db.executemany("INSERT INTO _logs VALUES (?, ?, ?, ?, ?)", batch)
        db.commit()
        (total,) = db.execute("SELECT count(*) FROM _logs").fetchone()
    for path in auxiliary.parent.glob(auxiliary.name + "*"):
        os.chown(path, info.st_uid, info.st_gid)
    return int(total)


def set_log_index(auxiliary: Path, present: bool) -> None:
    with contextlib.closing(sqlite3.connect(auxiliary)) as db, db:
        if present:
            db.execute("CREATE INDEX IF NOT EXISTS idx_pocketfleet_logs_created ON _logs (created)")
        else:
            db.execute("DROP INDEX IF EXISTS idx_pocketfleet_logs_created")


def wake_series(
    serve: Serve, names: list[str], tokens: dict[str, str], wakes: int, *, hibernated: bool = False
) -> list[float]:
    """Hibernate (unless `hibernated`) and wake each of `names` in turn, `wakes` times: the
    first request's times through the proxy."""
    results: list[float] = []
    for k in range(wakes):
        name = names[k % len(names)]
        if not hibernated:
            hibernate(serve, name)
        with serve.instance(name) as client:
            client.headers["Authorization"] = tokens[name]
            try:
                results.append(timed_request(client))
            except RuntimeError as err:
                raise RuntimeError(f"{err}; {name}: {serve.row(name)['status_reason']}") from err
    return results


def idle_cpu(pid: int, seconds: float) -> float:
    """CPU used by `pid` while idle, in percent of one core."""
    return idle_cpus([pid], seconds)[0]


def idle_cpus(pids: list[int], seconds: float) -> list[float]:
    """CPU used by each of `pids` over the same idle `seconds`, in percent of one core."""
    processes = [psutil.Process(pid) for pid in pids]
    before = [p.cpu_times() for p in processes]
    time.sleep(seconds)
    after = [p.cpu_times() for p in processes]
    return [
        100 * ((a.user - b.user) + (a.system - b.system)) / seconds
        for a, b in zip(after, before, strict=True)
    ]


def settle(pid: int, below: float = 2.0, longest: float = 120.0) -> None:
    """Wait until `pid` is done with start-up work (a fleet's first pass adds a scheduler job
    per instance): two 3-second windows in a row under `below` % of a core."""
    deadline = time.monotonic() + longest
    calm = 0
    while calm < 2 and time.monotonic() < deadline:
        calm = calm + 1 if idle_cpu(pid, 3.0) < below else 0


def litestream_pid() -> int | None:
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "litestream":
            return int(process.pid)
    return None


def fleet_cpu_text(pid: int, seconds: float) -> tuple[str, str]:
    """Idle CPU of the control plane `pid`, and of Litestream (its child for replication)."""
    replicator = litestream_pid()
    cpus = idle_cpus([pid] + ([replicator] if replicator else []), seconds)
    litestream = f"{cpus[1]:.2f} % of a core" if replicator else "not running"
    return f"{cpus[0]:.2f} % of a core", litestream


async def add_hibernated(data_dir: Path, count: int) -> float:
    """`count` hibernated instances of the bench account, through the services (serve must
    not run: this is its database). Returns the seconds it took."""
    from sqlmodel import select

    from control_plane.admin import open_db
    from control_plane.db.models import Account, Instance, utcnow
    from control_plane.drivers.process import ProcessDriver
    from control_plane.engines.registry import default_registry
    from control_plane.lifecycle import InstanceState, transition
    from control_plane.schemas import InstanceCreate
    from control_plane.services.instances import InstanceService
    from control_plane.settings import Settings

    class NoReconciler:
        def nudge(self) -> None: ...

        async def wait_settled(self, instance_id: str, timeout: float) -> None: ...

        def next_change(self) -> asyncio.Event:
            return asyncio.Event()

    started = time.monotonic()
    settings = Settings(
        data_dir=data_dir, default_quota=1_000_000, instance_port_range=(12000, 15999)
    )
    engines = default_registry(settings)
    async with open_db(settings) as db:
        service = InstanceService(settings, db, engines, ProcessDriver(settings), NoReconciler())
        async with db() as session:
            account = (await session.exec(select(Account).where(Account.email == EMAIL))).one()
        for i in range(count):
            made = await service.create(account, InstanceCreate(name=f"asleep{i}"))
            async with db() as session:
                row = await session.get(Instance, made.id)
                assert row is not None
                transition(session, row, InstanceState.RUNNING, actor="bench", reason="bench")
                transition(session, row, InstanceState.HIBERNATED, actor="bench", reason="bench")
                row.desired, row.desired_by, row.hibernated_at = "hibernated", "bench", utcnow()
                await session.commit()
    return time.monotonic() - started


def measure_pocketfleet(
    serve: Serve,
    tokens: dict[str, str],
    note: Callable[[str, str], None],
    pb_memory: tuple[int, int, int],
    wakes: list[float],
) -> None:
    """Idle memory and cold wakes of an instance of the `pocketfleet` engine."""
    serve.create("pf0", engine="pocketfleet")
    with serve.instance("pf0") as client:
        tokens["pf0"] = superuser_token(client)
        client.headers["Authorization"] = tokens["pf0"]
        fill(client, records=200, requests=300)
    pf_memory = memory_of(serve.row("pf0")["pid"])
    note("running idle pocketfleet instance (after traffic)", memory_text(pf_memory))
    note("PSS pocketfleet / pocketbase", f"{pf_memory[1] / pb_memory[1]:.2f}x")
    pf_wakes = wake_series(serve, ["pf0"], tokens, 10)
    note("wake, pocketfleet engine, through the proxy", summary(pf_wakes))
    note(
        "pocketfleet wake p50 / pocketbase wake p50",
        f"{percentile(pf_wakes, 50) / percentile(wakes, 50):.1f}x",
    )
    hibernate(serve, "pf0")


async def pocketfleet_starts(
    root: Path, zygote: bool, times: int
) -> tuple[list[float], list[tuple[int, int, int]]]:
    """Start -> first response of a `pocketfleet` instance through the process driver, run
    as our own user, forked by the zygote or started cold (the first, warm-up start aside);
    and the memory of three such instances running side by side, idle after a request."""
    from control_plane.drivers.base import InstanceSpec
    from control_plane.drivers.process import ProcessDriver
    from control_plane.engines.base import InstanceLayout
    from control_plane.engines.pocketfleet import PocketfleetEngine
    from control_plane.settings import Settings

    settings = Settings(data_dir=root / ("zygote" if zygote else "cold"), zygote=zygote)
    settings.instances_dir.mkdir(parents=True, exist_ok=True)
    engine = PocketfleetEngine()
    layout = InstanceLayout((settings.instances_dir / "pfbench").absolute())
    spec = InstanceSpec("pfbench", "pfbench", engine, engine.default_version(), layout, free_port())
    driver = ProcessDriver(settings)
    results: list[float] = []
    try:
        await driver.stop(spec, await driver.start(spec))
        if driver.zygotes is not None:
            path = str(driver.zygotes.socket_path(f"pocketfleet-{engine.default_version()}"))
            for _ in range(600):  # the zygote imports the runtime: wait until it listens
                try:
                    (await asyncio.open_unix_connection(path))[1].close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{spec.port}") as client:
            for _ in range(times):
                started = time.perf_counter()
                pid = await driver.start(spec)
                response = await client.get("/api/health")
                results.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
                await driver.stop(spec, pid)
        specs = [
            InstanceSpec(f"pfside{i}", f"pfside{i}", engine, engine.default_version(),
                         InstanceLayout((settings.instances_dir / f"pfside{i}").absolute()),
                         free_port(18000 + 10 * i, 18009 + 10 * i))
            for i in range(3)
        ]  # fmt: skip
        pids = [await driver.start(side) for side in specs]
        async with httpx.AsyncClient() as client:
            for side in specs:
                await client.get(f"http://127.0.0.1:{side.port}/api/health")
        await asyncio.sleep(2)
        memory = [memory_of(pid) for pid in pids]
        for side, pid in zip(specs, pids, strict=True):
            await driver.stop(side, pid)
    finally:
        await driver.aclose()
    return results, memory


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def measure_wakes(
    serve: Serve,
    names: list[str],
    args: argparse.Namespace,
    note: Callable[[str, str], None],
    root: Path,
) -> None:
    """Sections 1 to 4 of the module docstring."""
    section(f"pocketbase: {args.instances} instances with data and traffic")
    tokens: dict[str, str] = {}
    warm: list[float] = []
    for name in names:
        serve.create(name)
        with serve.instance(name) as client:
            client.headers["Authorization"] = tokens.setdefault(name, superuser_token(client))
            fill(client, records=200, requests=300)
            warm += [timed_request(client) for _ in range(20)]
    folder = serve.root / "data" / "instances" / serve.row(names[0])["id"]
    pb_pid = serve.row(names[0])["pid"]
    pb_memory = memory_of(pb_pid)
    note("running idle pocketbase instance (after traffic)", memory_text(pb_memory))
    note("request to a running instance through the proxy", summary(warm))

    section(f"pocketbase: {args.wakes} wakes, first request through the proxy")
    wakes = wake_series(serve, names, tokens, args.wakes)
    note("wake (hibernated -> first response)", summary(wakes))
    hibernate(serve, names[0])
    raw = raw_pocketbase_starts(folder, tokens[names[0]], 20)
    note("baseline: PocketBase binary started by hand until it answers", summary(raw))
    ratio = percentile(wakes, 50) / percentile(raw, 50)
    overhead = percentile(wakes, 50) - percentile(raw, 50)
    note("wake p50 / hand-started p50", f"{ratio:.2f}x (+{overhead:.1f} ms)")

    section(f"pocketbase: wake with {args.log_rows} request-log rows")
    auxiliary = folder / "pb_data" / "auxiliary.db"
    rows = fill_request_log(auxiliary, args.log_rows)
    files = sum(path.stat().st_size for path in auxiliary.parent.glob("auxiliary.db*"))
    note("request log (auxiliary.db and its WAL)", f"{rows} rows, {mb(files)}")
    one = [names[0]]
    with_index = wake_series(serve, one, tokens, 10)
    hibernate(serve, names[0])
    set_log_index(auxiliary, present=False)
    without_index = wake_series(serve, one, tokens, 10)
    hibernate(serve, names[0])
    set_log_index(auxiliary, present=True)
    note("wake, big log, with pocketfleet's index", summary(with_index))
    note("wake, big log, without the index (PocketBase as shipped)", summary(without_index))
    note("without / with", f"{percentile(without_index, 50) / percentile(with_index, 50):.2f}x")

    section("pocketfleet engine")
    try:
        measure_pocketfleet(serve, tokens, note, pb_memory, wakes)
    except (RuntimeError, httpx.HTTPError, KeyError) as err:
        note("pocketfleet engine", f"not measured: {err}")

    section("pocketfleet engine at the driver: zygote against cold starts")
    forked, forked_memory = asyncio.run(pocketfleet_starts(root, zygote=True, times=20))
    cold, cold_memory = asyncio.run(pocketfleet_starts(root, zygote=False, times=5))
    note("pocketfleet start -> first response, forked by the zygote", summary(forked))
    note("pocketfleet start -> first response, cold", summary(cold))
    note("cold / zygote", f"{percentile(cold, 50) / percentile(forked, 50):.1f}x")
    pss_forked = statistics.mean(m[1] for m in forked_memory)
    pss_cold = statistics.mean(m[1] for m in cold_memory)
    note("3 idle pocketfleet instances forked by the zygote, each", memory_text(forked_memory[0]))
    note("3 idle pocketfleet instances started cold, each", memory_text(cold_memory[0]))
    note("PSS forked / cold", f"{pss_forked / pss_cold:.2f}x")
    note("PSS forked pocketfleet / pocketbase", f"{pss_forked / pb_memory[1]:.2f}x")


class SandboxSide:
    """One side of the sandbox comparison: a server of its own with `PF_SANDBOX=mode` and
    `--instances` filled instances."""

    def __init__(self, root: Path, mode: str, args: argparse.Namespace) -> None:
        folder = root / f"sandbox-{mode}"
        folder.mkdir(mode=0o711)
        ports = "[12000, 13999]" if mode == "off" else "[14000, 15999]"  # both run at once
        self.serve = Serve(
            folder,
            {"PF_IDLE_TIMEOUT_S": "0", "PF_SANDBOX": mode, "PF_INSTANCE_PORT_RANGE": ports},
        )
        self.names = [f"sb{mode}{i}" for i in range(args.instances)]
        self.tokens: dict[str, str] = {}
        self.wakes: list[float] = []

    def prepare(self) -> None:
        self.serve.start()
        self.serve.sign_in()
        for name in self.names:
            self.serve.create(name)
            with self.serve.instance(name) as client:
                client.headers["Authorization"] = self.tokens.setdefault(
                    name, superuser_token(client)
                )
                fill(client, records=200, requests=50)
        wake_series(self.serve, self.names, self.tokens, len(self.names))  # each woken once

    def wake(self, k: int) -> None:
        name = self.names[k % len(self.names)]
        self.wakes.extend(wake_series(self.serve, [name], self.tokens, 1))

    def idle_memory(self) -> tuple[int, int, int]:
        """PSS summed over the first instance's processes, the sandbox's bwrap included."""
        pid = self.serve.row(self.names[0])["pid"]
        pids = [pid]
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid).parent()
            if parent is not None and parent.name() == "bwrap":
                pids.append(parent.pid)
        memories = [memory_of(p) for p in pids]
        return (
            sum(m[0] for m in memories),
            sum(m[1] for m in memories),
            sum(m[2] for m in memories),
        )


def measure_sandbox(root: Path, args: argparse.Namespace, note: Callable[[str, str], None]) -> None:
    """Section 0 of the module docstring. Both servers run at once and their wakes alternate
    (off, on, on, off, ...), so that whatever else the machine does weighs on both alike."""
    section(f"sandbox cost: {args.wakes} wakes of {args.instances} pocketbase instances, each way")
    off, on = SandboxSide(root, "off", args), SandboxSide(root, "on", args)
    try:
        off.prepare()
        on.prepare()
        for k in range(args.wakes):
            for side in (off, on) if k % 2 == 0 else (on, off):
                side.wake(k)
        time.sleep(2)
        off_memory, on_memory = off.idle_memory(), on.idle_memory()
    finally:
        off.serve.down()
        on.serve.down()
    note("wake without the sandbox (PF_SANDBOX=off)", summary(off.wakes))
    note("wake in the sandbox", summary(on.wakes))
    for q in (50, 95):
        ratio = percentile(on.wakes, q) / percentile(off.wakes, q)
        note(f"wake p{q} sandboxed / not", f"{ratio:.2f}x")
    note("idle instance without the sandbox", memory_text(off_memory))
    note("idle instance in the sandbox (+ its bwrap)", memory_text(on_memory))
    note("idle PSS sandboxed / not", f"{on_memory[1] / off_memory[1]:.2f}x")


def woken_in_ms(serve: Serve, name: str) -> float | None:
    """The control plane's own figure for the instance's last wake (its status reason, which
    is recorded once the woken request was answered: waited for up to 2 s)."""
    deadline = time.monotonic() + 2.0
    while True:
        reason = str(serve.row(name).get("status_reason") or "")
        found = re.search(r"woken by a request \((\d+) ms\)", reason)
        if found or time.monotonic() > deadline:
            return float(found.group(1)) if found else None
        time.sleep(0.01)


def measure_engines(
    serve: Serve, args: argparse.Namespace, note: Callable[[str, str], None]
) -> None:
    """Section 0 (`--engines-only`) of the module docstring."""
    section(f"wake by engine: {args.wakes} wakes each, alternating, {args.asleep_s:g} s asleep")
    names = {"pocketbase": "pbw", "pocketfleet": "pfw"}
    tokens: dict[str, str] = {}
    for engine, name in names.items():
        serve.create(name, engine=engine)
        with serve.instance(name) as client:
            tokens[name] = superuser_token(client)
            client.headers["Authorization"] = tokens[name]
            fill(client, records=200, requests=300)
    wakes: dict[str, list[float]] = {engine: [] for engine in names}
    inside: dict[str, list[float]] = {engine: [] for engine in names}
    by_hand: list[float] = []
    cpu: dict[str, list[float]] = {engine: [] for engine in names}  # serve's, during each wake
    served = psutil.Process(serve.process.pid if serve.process else os.getpid())
    copy = Path(tempfile.mkdtemp(prefix="pf-bench-raw-"))
    if args.breakdown:  # the baseline: PocketBase by hand on a copy of pbw's folder
        hibernate(serve, names["pocketbase"])
        folder = serve.root / "data" / "instances" / serve.row(names["pocketbase"])["id"]
        shutil.copytree(folder, copy / "i", dirs_exist_ok=True)
    log_path = serve.root / "serve.log"
    log_from = log_path.stat().st_size if log_path.exists() else 0
    try:
        for k in range(args.wakes + 1):
            order = list(names.items()) if k % 2 == 0 else list(reversed(names.items()))
            for engine, name in order:
                hibernate(serve, name)
                time.sleep(args.asleep_s)
                cpu_before = served.cpu_times()
                took = wake_series(serve, [name], tokens, 1, hibernated=True)[0]
                cpu_after = served.cpu_times()
                if k == 0:
                    continue  # the first wake of each warms up (pocketfleet's zygote starts)
                wakes[engine].append(took)
                cpu[engine].append(
                    1000 * sum(a - b for a, b in zip(cpu_after[:2], cpu_before[:2], strict=True))
                )
                own = woken_in_ms(serve, name)
                if own is not None:
                    inside[engine].append(own)
            if args.breakdown and k > 0:
                by_hand.append(hand_started(copy / "i", tokens[names["pocketbase"]]))
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    for engine in names:
        note(f"wake through the proxy, {engine}", summary(wakes[engine]))
        if inside[engine]:
            note(f"  the control plane's account of it, {engine}", summary(inside[engine]))
        if args.breakdown:
            note(f"  the control plane's CPU during it, {engine}", summary(cpu[engine]))
    for q in (50, 95):
        ratio = percentile(wakes["pocketfleet"], q) / percentile(wakes["pocketbase"], q)
        note(f"wake p{q} pocketfleet / pocketbase", f"{ratio:.2f}x")
    if by_hand:
        note("baseline: PocketBase started by hand until it answers", summary(by_hand))
        for engine in names:
            extra = percentile(wakes[engine], 50) - percentile(by_hand, 50)
            note(f"wake p50 {engine} - hand-started p50", f"{extra:+.1f} ms")
    if args.breakdown:
        with log_path.open("rb") as file:
            file.seek(log_from)
            text = file.read().decode(errors="replace")
        for engine, name in names.items():
            host = f"{name}.localhost"
            spans = wake_spans(text, host, serve.row(name)["id"], wakes[engine])
            print_breakdown(engine, spans)


# One wake in serve.log (`--log-level info`): the hibernator's marks (control_plane/hibernation
# `_Timeline`), the process driver's account of the start, the embedded proxy's line.
_HIBERNATOR_LINE = re.compile(r"wake (\S+): ((?:\w+=[\d.]+ ?)+) ms")
_DRIVER_LINE = re.compile(
    r"instance (\w+): (?:forked|cold) pid \d+ healthy in ([\d.]+) ms "
    r"\(running after ([\d.]+) ms, healthy after ([\d.]+) ms\)"
)
_PROXY_LINE = re.compile(
    r"woken request (\S+): wake=([\d.]+) first_byte=([\d.]+) last_byte=([\d.]+) ms"
)
# (label, span): the rows of the breakdown, in the order a wake goes through them
BREAKDOWN_ROWS = (
    ("proxy asks -> instance taken (exclusive)", "exclusive"),
    ("  read the instance row", "read"),
    ("  wake slot", "slot"),
    ("  driver.start, in all", "start"),
    ("    driver: before the launch (lock, checks)", "driver_before"),
    ("    driver: launch -> process running", "driver_running"),
    ("    driver: running -> healthy", "driver_healthy"),
    ("    driver: after healthy (cgroup join)", "driver_after"),
    ("  wait for `desired = running` commit", "marked"),
    ("  publish the UP route", "published"),
    ("  settle -> proxy resumes", "handoff"),
    ("proxy: wake, in all", "wake"),
    ("proxy forwards -> first byte from the instance", "first_byte"),
    ("first byte -> last byte", "last_byte"),
    ("client: outside the proxy (connect, parse, send)", "outside"),
    ("client: in all", "client"),
    ("(after) until the held requests were answered", "answered"),
    ("(after) then record `running`", "saved"),
)
# the hibernator's spans from the wake's start to the route published
BREAKDOWN_KEYS_TO_PUBLISH = ("exclusive", "read", "slot", "start", "marked", "published")


def wake_spans(
    text: str, host: str, instance_id: str, client: list[float]
) -> dict[str, list[float]]:
    """Each span of BREAKDOWN_ROWS over the timed wakes (the first, warm-up wake dropped)."""
    marks = [
        {k: float(v) for k, v in (pair.split("=") for pair in found.group(2).split())}
        for found in _HIBERNATOR_LINE.finditer(text)
        if found.group(1).split(":")[0] == host
    ]
    driver = [
        tuple(float(x) for x in found.groups()[1:])
        for found in _DRIVER_LINE.finditer(text)
        if found.group(1) == instance_id
    ]
    proxy = [
        tuple(float(x) for x in found.groups()[1:])
        for found in _PROXY_LINE.finditer(text)
        if found.group(1).split(":")[0] == host
    ]
    n = len(client)
    marks, driver, proxy = marks[-n:], driver[-n:], proxy[-n:]
    spans: dict[str, list[float]] = {key: [] for _, key in BREAKDOWN_ROWS}
    if not (len(marks) == len(driver) == len(proxy) == n):
        print(f"  (breakdown of {host}: {len(marks)}/{len(driver)}/{len(proxy)} lines for {n})")
        return spans
    for mark, (whole, running, healthy), (wake, first, last), total in zip(
        marks, driver, proxy, client, strict=True
    ):
        for key in (*BREAKDOWN_KEYS_TO_PUBLISH, "answered", "saved"):
            spans[key].append(mark.get(key, 0.0))
        spans["driver_before"].append(mark.get("start", 0.0) - whole)
        spans["driver_running"].append(running)
        spans["driver_healthy"].append(healthy - running)
        spans["driver_after"].append(whole - healthy)
        until_published = sum(mark.get(key, 0.0) for key in BREAKDOWN_KEYS_TO_PUBLISH)
        spans["handoff"].append(wake - until_published)
        spans["wake"].append(wake)
        spans["first_byte"].append(first)
        spans["last_byte"].append(last)
        spans["outside"].append(total - wake - first - last)
        spans["client"].append(total)
    return spans


def print_breakdown(engine: str, spans: dict[str, list[float]]) -> None:
    section(f"breakdown of a wake, {engine} (ms over {len(spans['client'])} wakes)")
    if not spans["client"]:
        return
    print(f"  {'span':<52} {'p50':>7} {'p95':>7}")
    for label, key in BREAKDOWN_ROWS:
        values = spans[key]
        print(f"  {label:<52} {percentile(values, 50):7.2f} {percentile(values, 95):7.2f}")


def print_summary(report: list[tuple[str, str]]) -> None:
    section("summary")
    width = max(len(label) for label, _ in report)
    for label, value in report:
        print(f"{label:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--wakes", type=int, default=60)
    parser.add_argument("--hibernated", type=int, default=1000)
    parser.add_argument("--running", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--log-rows", type=int, default=150_000)
    parser.add_argument(
        "--fleet-only", action="store_true", help="measure only the control plane's fleet (5.)"
    )
    parser.add_argument(
        "--sandbox-compare", action="store_true", help="also measure the sandbox's cost (0.)"
    )
    parser.add_argument(
        "--sandbox-only", action="store_true", help="measure only the sandbox's cost (0.)"
    )
    parser.add_argument(
        "--engines-only",
        action="store_true",
        help="measure only the wake of pocketfleet against pocketbase (0.)",
    )
    parser.add_argument("--asleep-s", type=float, default=1.0, help="with --engines-only")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="with --engines-only: where each wake's time goes, from serve's log (info level)",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pf-bench-wake-"))
    root.chmod(0o711)
    serve = Serve(root, {"PF_IDLE_TIMEOUT_S": "0"}, "info" if args.breakdown else "warning")
    report: list[tuple[str, str]] = []

    def note(label: str, value: str) -> None:
        report.append((label, value))
        print(f"  {label}: {value}", flush=True)

    try:
        if args.sandbox_compare or args.sandbox_only:
            measure_sandbox(root, args, note)
        if args.sandbox_only:
            print_summary(report)
            return
        serve.start()
        serve.sign_in()
        if args.engines_only:
            measure_engines(serve, args, note)
            print_summary(report)
            return
        time.sleep(3)
        empty_cpu = idle_cpu(
            serve.process.pid if serve.process else 0, min(20.0, args.idle_seconds)
        )
        empty_memory = memory_of(serve.process.pid if serve.process else 0)

        names = [f"pb{i}" for i in range(0 if args.fleet_only else args.instances)]
        if not args.fleet_only:
            measure_wakes(serve, names, args, note, root)

        section(f"control plane: {args.hibernated} hibernated + {args.running} running")
        for name in names:
            if serve.row(name)["status"] == "running":
                hibernate(serve, name)
        serve.stop()
        took = asyncio.run(add_hibernated(root / "data", args.hibernated))
        note(
            f"{args.hibernated} hibernated instances created through the services", f"{took:.1f} s"
        )
        serve.start()  # (the session token stays valid across the restart)
        pid = serve.process.pid if serve.process else 0
        settle(pid)
        asleep_cpu, asleep_litestream = fleet_cpu_text(pid, args.idle_seconds)
        for i in range(args.running):
            serve.create(f"up{i}")
        settle(pid)
        fleet_cpu, fleet_litestream = fleet_cpu_text(pid, args.idle_seconds)
        fleet_memory = memory_of(pid)
        note("control plane, no instance: memory", memory_text(empty_memory))
        note("control plane, no instance: idle CPU", f"{empty_cpu:.2f} % of a core")
        over = f"over {args.idle_seconds:g} s"
        note(f"control plane, {args.hibernated} hibernated: idle CPU {over}", asleep_cpu)
        note(f"  Litestream replicating them, {over}", asleep_litestream)
        note(f"control plane, + {args.running} running: memory", memory_text(fleet_memory))
        note(f"control plane, + {args.running} running: idle CPU {over}", fleet_cpu)
        note(f"  Litestream replicating them all, {over}", fleet_litestream)
        note("fleet / empty", f"memory (PSS) {fleet_memory[1] / empty_memory[1]:.2f}x")
    except BaseException:
        log = root / "serve.log"
        if log.exists():
            print("--- the end of serve.log:\n" + log.read_text(errors="replace")[-6000:])
        raise
    finally:
        serve.down()
        shutil.rmtree(root, ignore_errors=True)

    print_summary(report)


if __name__ == "__main__":
    main()
