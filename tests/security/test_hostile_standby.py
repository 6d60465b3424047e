"""Attacks on what makes a `pocketfleet` instance wake fast (`control_plane.drivers.process`):
the readiness pipe a forked child says "serving" on, and the standby a hibernated instance
gets (a parked fork in its sandbox, told to go by the next start).

- The tenant's code runs in the child before it listens (a hook loads at start-up) and has the
  pipe: it says "serving" early, then keeps the server from listening for a while. The driver
  must not take its word: the instance is healthy once its own process really listens, on its
  own port (not moved away, no request routed to a server that is not there).
- A parked standby has the instance's uid: nothing of the instance runs in it, and it holds
  nothing of the control plane's (no capability, no descriptor but its own pipes), so a
  tenant gains nothing by the standby existing. Zygote requests that name descriptors wrongly
  are refused.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from control_plane.drivers.base import InstanceSpec
from control_plane.drivers.process import ProcessDriver
from control_plane.drivers.zygote import Zygotes
from control_plane.engines.base import InstanceLayout
from control_plane.engines.pocketfleet import PocketfleetEngine
from control_plane.settings import Settings
from tests.support.ports import free_port
from tests.support.server import scratch_dir
from tests.support.zygotes import zygote_listening

EARLY_SERVING_HOOK = """
import os, time
try:
    os.write(4, b"serving\\n")  # the readiness pipe of a forked child
    said = "said"
except OSError as err:
    said = str(err)
with open(os.path.join(os.environ["HOME"], "early"), "a") as out:
    out.write(said + "\\n")
time.sleep(1.5)  # and the server does not listen for a while yet
"""


@pytest.fixture
async def driver() -> AsyncIterator[tuple[ProcessDriver, Path]]:
    root = scratch_dir("pf-hostile-standby-")
    settings = Settings(data_dir=root / "data", start_timeout_s=30.0, stop_timeout_s=5.0)
    made = ProcessDriver(settings)
    try:
        yield made, root
    finally:
        await made.aclose()
        shutil.rmtree(root, ignore_errors=True)


async def _zygote_up(driver: ProcessDriver, key: str) -> None:
    assert driver.zygotes is not None
    await zygote_listening(driver.zygotes, key, timeout=90)


def _environ_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _spec(driver: ProcessDriver, number: int) -> InstanceSpec:
    engine = PocketfleetEngine()
    instance_id = f"hs{number}{os.getpid() % 100000:05d}"
    uid = driver.settings.instance_uid_base + 9000 + 10 * (os.getpid() % 500) + number
    layout = InstanceLayout(driver.settings.instances_dir.absolute() / instance_id)
    return InstanceSpec(
        instance_id, instance_id, engine, engine.default_version(), layout, free_port(), uid=uid
    )


async def test_a_hook_saying_serving_early_is_not_believed(
    driver: tuple[ProcessDriver, Path],
) -> None:
    proc_driver, _ = driver
    spec = _spec(proc_driver, 1)
    assert spec.uid is not None
    await proc_driver.stop(spec, await proc_driver.start(spec))  # cold: starts the zygote
    await _zygote_up(proc_driver, f"pocketfleet-{spec.version}")
    hook = spec.layout.hooks_dir / "early.py"
    hook.write_text(EARLY_SERVING_HOOK)
    os.chown(hook, spec.uid, spec.uid)

    for _ in range(2):  # forked anew, then from its standby
        pid = await proc_driver.start(spec)  # no PortTakenError: it listens, on its port
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{spec.port}/api/health")
        assert health.status_code == 200
        own = proc_driver._own(spec, pid)
        assert own is not None and own.listens_on(spec.port)
        await proc_driver.stop(spec, pid)
        said = (spec.layout.root / "early").read_text().split()
        assert said and said[-1] == "said"  # it did write on the pipe
        await proc_driver.asleep(spec)
        for _ in range(400):
            if spec.id in proc_driver._standbys:
                break
            await asyncio.sleep(0.025)
    assert (spec.layout.root / "early").read_text().split() == ["said", "said"]
    await proc_driver.stop(spec, None)


async def test_a_standby_holds_nothing_of_the_control_plane(
    driver: tuple[ProcessDriver, Path],
) -> None:
    proc_driver, _ = driver
    spec = _spec(proc_driver, 2)
    await proc_driver.stop(spec, await proc_driver.start(spec))
    await _zygote_up(proc_driver, f"pocketfleet-{spec.version}")
    await proc_driver.asleep(spec)
    for _ in range(400):
        if spec.id in proc_driver._standbys:
            break
        await asyncio.sleep(0.025)
    standby = proc_driver._standbys[spec.id]
    parked = psutil.Process(standby.pid)
    assert parked.uids().real == parked.uids().effective == spec.uid
    # its descriptors: stdin, the log twice, and its three pipes (hold, ready, go) - no socket
    # of the zygote's, no control DB, nothing else of ours
    links = sorted(
        os.readlink(f"/proc/{standby.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{standby.pid}/fd")
    )
    assert not [link for link in links if link.startswith("socket:")], links
    assert len([link for link in links if link.startswith("pipe:")]) == 3, links
    files = [link for link in links if link.startswith("/")]
    assert set(files) == {os.devnull, str(spec.layout.log_file.absolute())}, links
    # the environment block it shows is the zygote's, not the control plane's
    assert b"PF_" not in _environ_of(standby.pid)
    await proc_driver.stop(spec, None)
    # killed with its sandbox; the kernel may still be tearing it down (disk-sleep) a moment
    for _ in range(200):
        if not _lingers(parked):
            break
        await asyncio.sleep(0.025)
    assert not _lingers(parked), parked


def _lingers(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    ("passed", "fds"),
    [
        (["go"], 1),  # a standby that could never say it parked
        (["hold", "hold"], 2),  # a role twice
        (["ready"], 2),  # more descriptors than roles
        (["secret"], 1),  # an unknown role
    ],
)
async def test_descriptors_named_wrongly_are_refused(
    passed: list[str], fds: int, caplog: pytest.LogCaptureFixture
) -> None:
    root = scratch_dir("pf-hostile-pass-")
    engine = PocketfleetEngine()
    command = engine.zygote_command(engine.default_version())
    assert command is not None
    zygotes = Zygotes(root / "zygotes")
    key = "pass-refusal"
    pipes = [os.pipe() for _ in range(fds)]
    try:
        assert await zygotes.spawn(key, command, {}) is None  # starts it
        await zygote_listening(zygotes, key, timeout=90)
        request: dict[str, object] = {
            "argv": [engine.python, "-m", "instance_runtime", "serve", "--dir", str(root)],
            "cwd": str(root),
            "env": {},
            "log": str(root / "child.log"),
            "uid": None,
            "nofile": 1024,
            "address_space": 1 << 32,
            "pass": passed,
        }
        sent = [write for _, write in pipes]
        assert await zygotes.spawn(key, command, request, fds=sent) is None
        assert "`pass` must name each descriptor sent" in caplog.text
        assert not (root / "child.log").exists()  # nothing was forked
    finally:
        zygotes.close()
        for pair in pipes:
            for fd in pair:
                os.close(fd)
        shutil.rmtree(root, ignore_errors=True)
