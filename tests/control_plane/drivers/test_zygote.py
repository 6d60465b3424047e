"""Instances of the `pocketfleet` engine forked by its zygote: the first start is cold (the
zygote starts in the background), later ones are forks of the zygote that serve, are seen as
the instance's own processes, run as the instance (folder, uid, limits) and stop cleanly."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import psutil
import pytest

from control_plane.drivers import sandbox
from control_plane.drivers.base import RunState
from control_plane.drivers.process import ProcessDriver
from control_plane.engines.pocketfleet import PocketfleetEngine
from control_plane.settings import Settings
from tests.control_plane.conftest import SpecFactory
from tests.support.zygotes import zygote_listening


async def zygote_ready(driver: ProcessDriver, key: str, timeout: float = 60) -> None:
    assert driver.zygotes is not None
    await zygote_listening(driver.zygotes, key, timeout)


async def test_a_started_instance_is_forked_by_the_zygote(
    proc_driver: ProcessDriver, make_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PF_S3_SECRET_KEY", "zygote-must-not-inherit-this")
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
    # the environment block it started with (what /proc/PID/environ shows) is not ours
    assert "zygote-must-not-inherit-this" not in str(child.environ())
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{spec.port}/api/health")
    assert health.status_code == 200
    assert (await proc_driver.status(spec, pid)).state == RunState.RUNNING
    assert "Server started" in " ".join(proc_driver.read_logs(spec, 20))

    await proc_driver.stop(spec, pid)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert (await proc_driver.status(spec, pid)).state == RunState.STOPPED


def _status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: line.split(":", 1)[1].strip() for line in lines}


@pytest.mark.skipif(sandbox.available() is not None, reason="no sandbox here")
async def test_a_forked_instance_joins_a_sandbox_of_its_own(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    engine = PocketfleetEngine()
    uid = driver_settings.instance_uid_base + 7000 + os.getpid() % 1000
    spec = make_spec(engine=engine, version=engine.default_version(), uid=uid)
    await proc_driver.stop(spec, await proc_driver.start(spec))  # cold, starts the zygote
    await zygote_ready(proc_driver, f"pocketfleet-{engine.default_version()}")

    pid = await proc_driver.start(spec)
    child = psutil.Process(pid)
    holder_bwrap = child.parent()
    assert holder_bwrap is not None and holder_bwrap.name() == "bwrap"  # its pid 1, not ours
    assert child.uids().real == uid and child.gids().real == uid
    assert sandbox.is_sandbox_engine(pid, uid)
    status = _status_of(pid)
    assert len(status["NSpid"].split()) == 2  # in a pid namespace of its own
    assert status["NoNewPrivs"] == "1" and status["CapEff"] == "0" * 16
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(f"/proc/{holder_bwrap.pid}/ns/mnt")
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{spec.port}/api/health")
    assert health.status_code == 200
    assert (await proc_driver.status(spec, pid)).state == RunState.RUNNING

    await proc_driver.stop(spec, pid)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    for _ in range(100):  # the holder saw its pipe close: the sandbox is gone
        if not holder_bwrap.is_running() or holder_bwrap.status() == psutil.STATUS_ZOMBIE:
            break
        await asyncio.sleep(0.05)
    assert not holder_bwrap.is_running() or holder_bwrap.status() == psutil.STATUS_ZOMBIE
