"""Benchmark: hibernate and wake with the `swarm` driver against `docker` and `process`.

    .venv/bin/python bench/swarm_wake.py [--wakes 10]

As root, on a private `dockerd` made a one-node Swarm (`tests/support/dockerd.py`) and the real
PocketBase: one instance per driver (process, docker: a container on that engine, swarm: a
service through it as manager), each with a superuser and 50 records (`docker_wake.seed`).
Printed, in one run: each driver's first start; then the wake (stop = hibernation: kill the
process / stop the container / scale the service to 0; start until healthy, then one
authenticated record list), `--wakes` times per driver, alternating: p50/p95 per driver and the
ratios swarm / process and swarm / docker; then the idle memory of each (PSS of the engine's
process, the same measure for all three).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import docker_wake  # noqa: E402  (seed, wake, pct, pss_mib)

from control_plane.drivers.base import Driver, InstanceSpec  # noqa: E402
from control_plane.drivers.docker import DockerDriver  # noqa: E402
from control_plane.drivers.ports import free_port  # noqa: E402
from control_plane.drivers.process import ProcessDriver  # noqa: E402
from control_plane.drivers.swarm import SwarmDriver  # noqa: E402
from control_plane.engines.base import InstanceLayout  # noqa: E402
from control_plane.engines.pocketbase import PocketBaseEngine  # noqa: E402
from control_plane.settings import DEFAULT_POCKETBASE_VERSION, Settings  # noqa: E402
from tests.support.dockerd import PrivateDockerd, unavailable  # noqa: E402


async def run(wakes: int, root: Path, engine_api: PrivateDockerd) -> None:
    settings = Settings(
        data_dir=root / "data", driver="docker", docker_host=engine_api.host, stop_timeout_s=5
    )
    engine = PocketBaseEngine(settings.engines_dir, DEFAULT_POCKETBASE_VERSION)
    assert engine.ensure_bundled()
    drivers: dict[str, Driver] = {
        "process": ProcessDriver(settings),
        "docker": DockerDriver(settings),
        "swarm": SwarmDriver(settings.model_copy(update={"driver": "swarm"})),
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
            uid=settings.instance_uid_base + 7100 + number,
        )
    print("1. first start")
    tokens: dict[str, str] = {}
    for name, driver in drivers.items():
        began = time.perf_counter()
        await driver.start(specs[name])
        print(f"   {name:8} first start {(time.perf_counter() - began) * 1000:7.1f} ms")
        tokens[name] = await docker_wake.seed(driver, specs[name])

    print(f"2. wake (stop, start until healthy, one authenticated list), {wakes} per driver")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in drivers}
    stops: dict[str, list[float]] = {name: [] for name in drivers}
    for _ in range(wakes):
        for name, driver in drivers.items():
            began = time.perf_counter()
            await driver.stop(specs[name], None)
            stops[name].append((time.perf_counter() - began) * 1000)
            results[name].append(await docker_wake.wake(driver, specs[name], tokens[name]))
    p50s: dict[str, float] = {}
    for name, values in results.items():
        healthy = [v[0] for v in values]
        answered = [v[1] for v in values]
        p50s[name] = statistics.median(answered)
        print(
            f"   {name:8} healthy p50 {statistics.median(healthy):6.1f} ms p95 "
            f"{docker_wake.pct(healthy, 0.95):6.1f} | answered p50 {p50s[name]:6.1f} ms p95 "
            f"{docker_wake.pct(answered, 0.95):6.1f} ms | stop p50 "
            f"{statistics.median(stops[name]):6.1f} ms"
        )
    print(f"   ratio swarm / process (answered p50): {p50s['swarm'] / p50s['process']:.2f}x")
    print(f"   ratio swarm / docker  (answered p50): {p50s['swarm'] / p50s['docker']:.2f}x")

    print("3. idle memory")
    await asyncio.sleep(2)
    for name, driver in drivers.items():
        observed = await driver.status(specs[name], None)
        pss = docker_wake.pss_mib(observed.pid) if observed.pid else float("nan")
        print(f"   {name:8} PSS of its process {pss:6.1f} MiB")
    for name, driver in drivers.items():
        await driver.remove(specs[name], keep_at=None)
        await driver.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakes", type=int, default=10)
    args = parser.parse_args()
    why = unavailable()
    if why is not None:
        sys.exit(f"cannot run: {why}")
    root = Path(tempfile.mkdtemp(prefix="pf-bench-swarm-", dir="/var/tmp"))
    root.chmod(0o755)
    engine_api = PrivateDockerd()
    try:
        engine_api.start()
        engine_api.init_swarm()
        asyncio.run(run(args.wakes, root, engine_api))
    finally:
        engine_api.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
