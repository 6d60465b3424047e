"""Benchmark: hibernate and wake with the `docker` driver against the `process` driver.

    .venv/bin/python bench/docker_wake.py [--wakes 20]

As root (instances run as their own uid, as in production), on a private `dockerd`
(`tests/support/dockerd.py`) and the real PocketBase: one instance per driver, each with a
superuser and a few records. Printed, in one run:

1. First start: the process driver's cold start, and the docker driver's first start (building
   and importing the image, creating the container) and its creation of a container once the
   image exists.
2. Wake: the instance is stopped (hibernation) and started again until its health URL answers,
   `--wakes` times per driver, alternating; then one authenticated record list, timed from the
   wake's start: p50/p95 per driver and the ratio docker / process.
3. Idle memory of each instance: the driver's own `stats` (PSS for a process, the container's
   usage less its inactive page cache for docker) and, the same measure for both, the PSS of
   the engine's process from /proc/PID/smaps_rollup.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from control_plane.drivers.base import Driver, InstanceSpec  # noqa: E402
from control_plane.drivers.docker import DockerDriver, container_name  # noqa: E402
from control_plane.drivers.ports import free_port  # noqa: E402
from control_plane.drivers.process import ProcessDriver  # noqa: E402
from control_plane.engines.base import InstanceLayout  # noqa: E402
from control_plane.engines.pocketbase import PocketBaseEngine  # noqa: E402
from control_plane.settings import DEFAULT_POCKETBASE_VERSION, Settings  # noqa: E402
from tests.support.dockerd import PrivateDockerd, unavailable  # noqa: E402

EMAIL = "bench@example.com"
PASSWORD = "bench-password-1"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def pss_mib(pid: int) -> float:
    """PSS of one process, from /proc/PID/smaps_rollup (the same measure for both drivers)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def seed(driver: Driver, spec: InstanceSpec) -> str:
    """A superuser, a collection and 50 records; returns a superuser token."""
    task = spec.engine.superuser_task(spec.version, spec.layout, EMAIL, PASSWORD)
    code, output = await driver.run_task(spec, task.argv, task.env)
    assert code == 0, output
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{spec.port}", trust_env=False) as c:
        auth = await c.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
        token: str = auth.json()["token"]
        c.headers["Authorization"] = token
        body = {"name": "notes", "type": "base", "fields": [{"name": "t", "type": "text"}]}
        assert (await c.post("/api/collections", json=body)).status_code == 200
        for n in range(50):
            await c.post("/api/collections/notes/records", json={"t": f"note {n}"})
    return token


async def wake(driver: Driver, spec: InstanceSpec, token: str) -> tuple[float, float]:
    """Stop, then start until healthy, then one record list: (healthy ms, answered ms)."""
    await driver.stop(spec, None)
    began = time.perf_counter()
    await driver.start(spec)
    healthy = time.perf_counter()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{spec.port}", trust_env=False) as c:
        listed = await c.get("/api/collections/notes/records", headers={"Authorization": token})
    assert listed.status_code == 200, listed.text
    done = time.perf_counter()
    return (healthy - began) * 1000, (done - began) * 1000


async def run(wakes: int, root: Path, engine_api: PrivateDockerd) -> None:
    settings = Settings(
        data_dir=root / "data", driver="docker", docker_host=engine_api.host, stop_timeout_s=5
    )
    engine = PocketBaseEngine(settings.engines_dir, DEFAULT_POCKETBASE_VERSION)
    assert engine.ensure_bundled()
    drivers: dict[str, Driver] = {
        "process": ProcessDriver(settings),
        "docker": DockerDriver(settings),
    }
    specs: dict[str, InstanceSpec] = {}
    taken: set[int] = set()
    for number, name in enumerate(drivers):
        port = free_port(settings, taken)
        taken.add(port)
        specs[name] = InstanceSpec(
            id=f"bench{name}",
            name=name,
            engine=engine,
            version=engine.default_version(),
            layout=InstanceLayout(settings.instances_dir.absolute() / f"bench{name}"),
            port=port,
            uid=settings.instance_uid_base + 7000 + number,
        )
    print("1. first start")
    tokens: dict[str, str] = {}
    for name, driver in drivers.items():
        began = time.perf_counter()
        await driver.start(specs[name])
        print(f"   {name:8} first start {(time.perf_counter() - began) * 1000:7.1f} ms")
        tokens[name] = await seed(driver, specs[name])
    docker_driver = drivers["docker"]
    assert isinstance(docker_driver, DockerDriver)
    await docker_driver.stop(specs["docker"], None)
    await asyncio.to_thread(docker_driver.api().remove_container, container_name(specs["docker"]))
    began = time.perf_counter()
    await docker_driver.start(specs["docker"])
    took = (time.perf_counter() - began) * 1000
    print(f"   docker   first start of a new container (image present) {took:7.1f} ms")

    print(f"2. wake (stop, start until healthy, one authenticated list), {wakes} per driver")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in drivers}
    for _ in range(wakes):
        for name, driver in drivers.items():
            results[name].append(await wake(driver, specs[name], tokens[name]))
    p50s: dict[str, float] = {}
    for name, values in results.items():
        healthy = [v[0] for v in values]
        answered = [v[1] for v in values]
        p50s[name] = statistics.median(answered)
        print(
            f"   {name:8} healthy p50 {statistics.median(healthy):6.1f} ms p95 "
            f"{pct(healthy, 0.95):6.1f} | answered p50 {p50s[name]:6.1f} ms p95 "
            f"{pct(answered, 0.95):6.1f} ms"
        )
    print(f"   ratio docker / process (answered p50): {p50s['docker'] / p50s['process']:.2f}x")

    print("3. idle memory")
    await asyncio.sleep(2)
    for name, driver in drivers.items():
        observed = await driver.status(specs[name], None)
        stats = await driver.stats(specs[name], observed.pid)
        mib = (stats.memory_bytes / (1 << 20)) if stats else float("nan")
        pss = pss_mib(observed.pid) if observed.pid else float("nan")
        print(f"   {name:8} driver stats {mib:6.1f} MiB | PSS of its process {pss:6.1f} MiB")
    for name, driver in drivers.items():
        await driver.remove(specs[name], keep_at=None)
        await driver.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakes", type=int, default=20)
    args = parser.parse_args()
    why = unavailable()
    if why is not None:
        sys.exit(f"cannot run: {why}")
    if os.geteuid() != 0:
        sys.exit("run as root")
    root = Path(tempfile.mkdtemp(prefix="pf-bench-docker-", dir="/var/tmp"))
    root.chmod(0o755)
    engine_api = PrivateDockerd()
    try:
        engine_api.start()
        asyncio.run(run(args.wakes, root, engine_api))
    finally:
        engine_api.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
