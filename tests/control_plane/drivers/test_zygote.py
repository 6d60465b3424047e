"""Instances of the `pocketfleet` engine forked by its zygote: the first start is cold (the
zygote starts in the background), later ones are forks of the zygote that serve, are seen as
the instance's own processes, run as the instance (folder, uid, limits) and stop cleanly."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import psutil

from control_plane.drivers.base import RunState
from control_plane.drivers.process import ProcessDriver
from control_plane.engines.pocketfleet import PocketfleetEngine
from tests.control_plane.conftest import SpecFactory


async def zygote_ready(driver: ProcessDriver, key: str, timeout: float = 60) -> None:
    assert driver.zygotes is not None
    path = driver.zygotes.socket_path(key)
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_unix_connection(str(path))
            writer.close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the zygote did not come up"
            await asyncio.sleep(0.1)


async def test_a_started_instance_is_forked_by_the_zygote(
    proc_driver: ProcessDriver, make_spec: SpecFactory
) -> None:
    engine = PocketfleetEngine()
    spec = make_spec(engine=engine, version=engine.default_version(), max_open_files=2000)
    cold = await proc_driver.start(spec)
    assert psutil.Process(cold).ppid() == os.getpid()  # the first start is cold
    await proc_driver.stop(spec, cold)
    await zygote_ready(proc_driver, f"pocketfleet-{engine.default_version()}")

    pid = await proc_driver.start(spec)
    child = psutil.Process(pid)
    assert child.ppid() != os.getpid()
    assert "instance_runtime.zygote" in " ".join(psutil.Process(child.ppid()).cmdline())
    assert child.cwd() == str(spec.layout.root)
    assert child.rlimit(psutil.RLIMIT_NOFILE) == (2000, 2000)
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{spec.port}/api/health")
    assert health.status_code == 200
    assert (await proc_driver.status(spec, pid)).state == RunState.RUNNING
    assert "Server started" in " ".join(proc_driver.read_logs(spec, 20))

    await proc_driver.stop(spec, pid)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert (await proc_driver.status(spec, pid)).state == RunState.STOPPED
