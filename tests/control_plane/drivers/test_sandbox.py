"""The instance sandbox (bubblewrap), through the process driver: what a process of an
instance can see and do. Real bwrap, real processes, as root."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import psutil
import pytest

from control_plane.drivers import sandbox
from control_plane.drivers.process import ProcessDriver
from control_plane.settings import Settings
from tests.control_plane.conftest import SpecFactory

HOST_HAS_CA_BUNDLE = os.path.exists("/etc/ssl/certs/ca-certificates.crt")
pytestmark = pytest.mark.skipif(
    sandbox.available() is not None, reason=f"no sandbox here: {sandbox.available()}"
)


@pytest.fixture
def uid(driver_settings: Settings) -> int:
    return driver_settings.instance_uid_base + 4000 + os.getpid() % 1000


async def sh(driver: ProcessDriver, spec_factory: SpecFactory, uid: int, script: str) -> str:
    spec = spec_factory(uid=uid)
    code, output = await driver.run_task(spec, ["/bin/sh", "-c", script])
    assert code == 0, output
    return output


def test_env_file_reads_back_exactly_in_a_shell() -> None:
    values = {"PLAIN": "x", "QUOTES": 'it\'s "q"', "DOLLAR": "$HOME `id` $(id)", "NL": "a\nb\\c"}
    script = "set -a; . /dev/stdin; set +a; env -0"
    done = subprocess.run(
        ["/bin/sh", "-c", script],
        input=sandbox.env_file(values),
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    seen = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    assert {name: seen[name] for name in values} == values


async def test_a_task_sees_its_own_folder_and_nothing_of_the_data_dir(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings, uid: int
) -> None:
    secret = driver_settings.data_dir / "control.db"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("the control database")
    spec = make_spec(uid=uid)
    code, output = await proc_driver.run_task(
        spec,
        ["/bin/sh", "-c", f"ls {driver_settings.data_dir}; ls {spec.layout.root}; id -u"],
    )
    lines = output.split()
    assert lines[:1] == ["instances"]  # made by bwrap to hold the instance's folder, alone
    assert "control.db" not in output
    assert set(lines[1:-1]) >= {"pb_data", "pb_hooks", "pb_migrations", "pb_public"}
    assert lines[-1] == str(uid)
    assert code == 0


async def test_a_task_sees_only_its_own_processes_with_no_privilege(
    proc_driver: ProcessDriver, make_spec: SpecFactory, uid: int
) -> None:
    output = await sh(
        proc_driver,
        make_spec,
        uid,
        "ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo;"
        " grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status; hostname",
    )
    pids, *status, hostname = output.strip().splitlines()
    # a fresh pid namespace: the shell is pid 1, its pipeline next; no process of the host
    assert "1" in pids.split()
    assert all(int(pid) < 10 for pid in pids.split()), pids
    assert sorted(status) == [
        "CapBnd:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "NoNewPrivs:\t1",
    ]
    assert hostname.startswith("pf-")


async def test_writes_outside_the_folder_fail_and_tmp_is_private(
    proc_driver: ProcessDriver, make_spec: SpecFactory, uid: int
) -> None:
    marker = f"pf-sandbox-test-{os.getpid()}"
    output = await sh(
        proc_driver,
        make_spec,
        uid,
        f"touch /usr/{marker} 2>&1; touch /etc/{marker} 2>&1; touch /{marker} 2>&1;"
        f" echo private > /tmp/{marker} && echo tmp-ok",
    )
    assert output.count("Read-only file system") + output.count("Permission denied") == 3
    assert "tmp-ok" in output
    assert _on_the_host(f"/tmp/{marker}", f"/usr/{marker}") == []  # the host never saw them


async def test_the_process_limit_is_the_kernel_s(
    proc_driver: ProcessDriver, make_spec: SpecFactory, uid: int
) -> None:
    spec = make_spec(uid=uid, max_processes=20)
    code, output = await proc_driver.run_task(
        spec, ["/bin/sh", "-c", "for i in $(seq 60); do sleep 5 & echo started $i; done"]
    )
    started = output.count("started")
    assert "Cannot fork" in output  # refused by RLIMIT_NPROC (and the pids cgroup)
    assert code != 0 and 0 < started < 20


async def test_no_secret_on_a_command_line_and_root_helpers_get_no_tenant_variable(
    proc_driver: ProcessDriver, make_spec: SpecFactory, uid: int
) -> None:
    spec = make_spec(uid=uid, env={"API_SECRET": "s3cr3t-value-xyz"})
    task = asyncio.create_task(
        proc_driver.run_task(spec, ["/bin/sh", "-c", 'echo "$API_SECRET"; sleep 3'])
    )
    seen: list[psutil.Process] = []
    for _ in range(200):
        seen = [  # among this test's own processes only (the driver runs here)
            p for p in _own_processes() if _named(p, "bwrap") and _runs_as(p.children(), uid)
        ]
        if seen:
            break
        await asyncio.sleep(0.02)
    assert seen, "the task's bwrap was not found"
    for outer in seen:
        assert "s3cr3t-value-xyz" not in " ".join(outer.cmdline())
        environ = outer.environ()
        assert environ == {"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}
    code, output = await task
    assert (code, output.split()[0]) == (0, "s3cr3t-value-xyz")


def _on_the_host(*paths: str) -> list[str]:
    return [path for path in paths if os.path.lexists(path)]


def _outside_a_sandbox(uid: int, *argv: str) -> subprocess.Popen[bytes]:
    """A process as `uid` but in no sandbox, naming `argv` on its command line."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)", *argv]
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return subprocess.Popen([*setpriv, *sleeper])


def _own_processes() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _named(process: psutil.Process, name: str) -> bool:
    try:
        return process.name() == name
    except psutil.NoSuchProcess:
        return False


def _runs_as(processes: list[psutil.Process], uid: int) -> bool:
    try:
        return any(p.uids().real == uid for p in processes)
    except psutil.Error:
        return False


async def test_only_a_sandbox_of_the_instance_passes_the_identity_check(
    proc_driver: ProcessDriver, make_spec: SpecFactory, uid: int
) -> None:
    spec = make_spec(uid=uid)
    pid = await proc_driver.start(spec)
    assert sandbox.is_sandbox_engine(pid, uid)
    assert not sandbox.is_sandbox_engine(pid, uid + 1)  # another instance's uid
    # the same uid outside a sandbox (as a tenant's process would be, were it not in one)
    # and naming the instance's folder on its command line: not the instance
    impostor = _outside_a_sandbox(uid, str(spec.layout.data_dir))
    try:
        assert not sandbox.is_sandbox_engine(impostor.pid, uid)
        assert (await proc_driver.status(spec, impostor.pid, health=False)).pid != impostor.pid
    finally:
        impostor.kill()
        impostor.wait()


async def test_a_restarted_control_plane_adopts_the_sandbox_by_identity(
    make_spec: SpecFactory, driver_settings: Settings, uid: int
) -> None:
    spec = make_spec(uid=uid)
    first = ProcessDriver(driver_settings)
    pid = await first.start(spec)
    await first.aclose()
    outer = psutil.Process(pid).parent()
    assert outer is not None and outer.name() == "bwrap"

    second = ProcessDriver(driver_settings)  # knows no pid: finds it, proves it, adopts it
    try:
        assert (await second.status(spec, pid)).pid == pid
        assert await second.start(spec) == pid
        await second.stop(spec, pid)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert not outer.is_running() or outer.status() == "zombie"
    finally:
        await second.aclose()


async def test_etc_holds_what_a_server_needs_and_nothing_else(
    proc_driver: ProcessDriver, make_spec: SpecFactory, uid: int
) -> None:
    output = await sh(
        proc_driver,
        make_spec,
        uid,
        "ls /etc; test -s /etc/resolv.conf && echo resolv-ok;"
        " test -r /etc/ssl/certs/ca-certificates.crt && echo certs-ok; ls /etc/shadow 2>&1 || true",
    )
    assert "shadow" not in output.split()
    assert "No such file or directory" in output
    assert "resolv-ok" in output
    if HOST_HAS_CA_BUNDLE:
        assert "certs-ok" in output


async def test_an_instance_left_running_outside_its_sandbox_is_replaced_by_a_sandboxed_one(
    make_spec: SpecFactory, driver_settings: Settings, uid: int
) -> None:
    spec = make_spec(uid=uid)
    unsandboxed = ProcessDriver(driver_settings.model_copy(update={"sandbox": "off"}))
    old = await unsandboxed.start(spec)  # as an older pocketfleet left it
    await unsandboxed.aclose()
    assert not sandbox.is_sandbox_engine(old, uid)

    driver = ProcessDriver(driver_settings)
    try:
        assert (await driver.status(spec, old, health=False)).pid is None  # not proven its own
        pid = await driver.start(spec)  # the same port: the old process is ended, not squatting

        assert pid != old and sandbox.is_sandbox_engine(pid, uid)
        assert not psutil.pid_exists(old) or psutil.Process(old).status() == "zombie"
    finally:
        await driver.stop(spec, None)
        await driver.aclose()
