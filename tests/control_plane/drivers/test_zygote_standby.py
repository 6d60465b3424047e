"""Standbys (`control_plane.drivers.process`): a sandboxed `pocketfleet` instance that
hibernates gets a parked zygote's child in a sandbox of its own, which its next start tells to
go. The standby is the instance's process already (uid, no capabilities, its sandbox) but runs
nothing of the instance's until the go; it is used only for the very request and folder it was
made for, and any stop, removal or change drops it without leaving a process behind."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import httpx
import psutil
import pytest

from control_plane.drivers import sandbox
from control_plane.drivers.base import InstanceSpec, RunState
from control_plane.drivers.process import ProcessDriver
from control_plane.engines.pocketfleet import PocketfleetEngine
from control_plane.settings import Settings
from tests.control_plane.conftest import SpecFactory
from tests.control_plane.drivers.test_zygote import zygote_ready

pytestmark = pytest.mark.skipif(sandbox.available() is not None, reason="no sandbox here")

# a tenant's hook: what it does at load time shows whether the instance's code has run
MARKER_HOOK = """
import os
with open(os.path.join(os.environ["HOME"], "hook-ran"), "a") as marker:
    marker.write(f"{os.getpid()}\\n")
"""


def _status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: line.split(":", 1)[1].strip() for line in lines}


def _processes_of(uid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["uids", "status"]):
        if process.info["uids"].real == uid and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


async def _gone(uid: int) -> bool:
    for _ in range(100):
        if not _processes_of(uid):
            return True
        await asyncio.sleep(0.05)
    return False


async def _standby_of(driver: ProcessDriver, spec: InstanceSpec) -> int:
    """Hibernation's call, then the pid of the standby it made."""
    await driver.asleep(spec)
    for _ in range(400):
        standby = driver._standbys.get(spec.id)
        if standby is not None:
            return standby.pid
        await asyncio.sleep(0.025)
    raise AssertionError("no standby was made")


async def _forking_spec(
    driver: ProcessDriver, make_spec: SpecFactory, settings: Settings, number: int
) -> InstanceSpec:
    """A sandboxed pocketfleet instance whose zygote runs (its first start was cold)."""
    engine = PocketfleetEngine()
    uid = settings.instance_uid_base + 8000 + 10 * (os.getpid() % 500) + number
    spec = make_spec(engine=engine, version=engine.default_version(), uid=uid)
    await driver.stop(spec, await driver.start(spec))
    await zygote_ready(driver, f"pocketfleet-{engine.default_version()}")
    return spec


async def _health(spec: InstanceSpec) -> int:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{spec.port}/api/health")
    return response.status_code


async def test_a_hibernated_instance_wakes_from_its_standby(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    spec = await _forking_spec(proc_driver, make_spec, driver_settings, 1)
    assert spec.uid is not None
    (spec.layout.hooks_dir / "marker.py").write_text(MARKER_HOOK)
    os.chown(spec.layout.hooks_dir / "marker.py", spec.uid, spec.uid)
    marker = spec.layout.root / "hook-ran"
    marker.unlink(missing_ok=True)

    parked = await _standby_of(proc_driver, spec)
    # the instance's process already, in a sandbox of its own, with nothing of root's
    assert sandbox.is_sandbox_engine(parked, spec.uid)
    status = _status_of(parked)
    assert status["Uid"].split()[0] == str(spec.uid) and status["CapEff"] == "0" * 16
    assert status["NoNewPrivs"] == "1" and len(status["NSpid"].split()) == 2
    # ... that runs nothing of the instance's, serves nothing, and does not count as running
    await asyncio.sleep(0.3)
    assert not marker.exists()
    with pytest.raises(httpx.ConnectError):
        await _health(spec)
    assert (await proc_driver.status(spec, None)).state == RunState.STOPPED

    pid = await proc_driver.start(spec)
    assert pid == parked
    assert await _health(spec) == 200
    assert len(marker.read_text().split()) == 1  # the hook ran once, after the go
    assert (await proc_driver.status(spec, pid)).state == RunState.RUNNING
    assert spec.id not in proc_driver._standbys

    await proc_driver.stop(spec, pid)
    assert await _gone(spec.uid)


async def test_a_standby_made_for_another_request_or_folder_is_dropped(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    spec = await _forking_spec(proc_driver, make_spec, driver_settings, 2)
    assert spec.uid is not None

    # its variables changed while it slept: the start forks anew, the standby is gone
    parked = await _standby_of(proc_driver, spec)
    changed = dataclasses.replace(spec, env={"GREETING": "changed"})
    pid = await proc_driver.start(changed)
    assert pid != parked and not psutil.pid_exists(parked)
    assert await _health(changed) == 200
    await proc_driver.stop(changed, pid)

    # its folder was swapped while it slept (as a restore does): the standby's sandbox shows
    # the old one, so it is not used
    parked = await _standby_of(proc_driver, spec)
    root = spec.layout.root
    old = root.with_name(root.name + ".old")
    root.rename(old)
    os.mkdir(root, 0o700)
    for entry in old.iterdir():
        entry.rename(root / entry.name)
    os.chown(root, spec.uid, spec.uid)
    pid = await proc_driver.start(spec)
    assert pid != parked and not psutil.pid_exists(parked)
    assert os.readlink(f"/proc/{pid}/cwd") == str(root)
    assert await _health(spec) == 200
    await proc_driver.stop(spec, pid)
    old.rmdir()
    assert await _gone(spec.uid)


async def test_stop_remove_and_close_leave_no_standby_behind(
    driver_settings: Settings, make_spec: SpecFactory
) -> None:
    driver = ProcessDriver(driver_settings)
    try:
        spec = await _forking_spec(driver, make_spec, driver_settings, 3)
        assert spec.uid is not None
        await _standby_of(driver, spec)
        await driver.stop(spec, None)  # a stop drops it
        assert spec.id not in driver._standbys and await _gone(spec.uid)

        await _standby_of(driver, spec)
        await driver.remove(spec, keep_at=None)  # so does a removal, and none is made again
        assert await _gone(spec.uid) and not spec.layout.root.exists()
        await driver.asleep(spec)
        await asyncio.sleep(0.3)
        assert spec.id not in driver._standbys and not spec.layout.root.exists()

        other = await _forking_spec(driver, make_spec, driver_settings, 4)
        assert other.uid is not None
        await _standby_of(driver, other)
    finally:
        await driver.aclose()  # the control plane goes: its standbys with it
    assert await _gone(other.uid)
