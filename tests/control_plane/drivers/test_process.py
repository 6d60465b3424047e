"""The `process` driver with the real PocketBase: start, adopt, stop, isolate, observe."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest

from control_plane.drivers.base import InstanceSpec, PortTakenError, RunState, StartError
from control_plane.drivers.launch import address_space_limit_mb
from control_plane.drivers.ports import NoFreePortError, free_port
from control_plane.drivers.process import ProcessDriver
from control_plane.engines.base import Engine, EngineTask, InstanceLayout
from control_plane.engines.pocketbase import PocketBaseEngine
from control_plane.settings import Settings
from tests.control_plane.conftest import SpecFactory

EMAIL = "root@example.com"
PASSWORD = "a-long-password-1"
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")


class ScriptEngine(Engine):
    """A stand-in engine running `python -c SCRIPT PORT DATA_DIR`, for misbehaviour on demand."""

    name = "script"

    def __init__(self, script: str) -> None:
        self.script = textwrap.dedent(script)

    def default_version(self) -> str:
        return "1"

    def installed_versions(self) -> list[str]:
        return ["1"]

    def install(self, version: str) -> None:
        self.require(version)

    def runtime_paths(self, version: str) -> list[Path]:
        return [Path(sys.base_prefix), Path(sys.prefix)]

    def serve_command(self, version: str, layout: InstanceLayout, port: int) -> list[str]:
        return [sys.executable, "-c", self.script, str(port), str(layout.data_dir.absolute())]

    def superuser_task(
        self, version: str, layout: InstanceLayout, email: str, password: str
    ) -> EngineTask:
        return EngineTask([sys.executable, "-c", "pass", str(layout.data_dir.absolute())])


def processes_naming(path: Path) -> list[int]:
    """Pids of live processes (not zombies, not us) whose command line contains `path`."""
    needle = str(path).encode()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in raw and state != "Z":
            pids.append(int(entry.name))
    return pids


def supplementary_groups(pid: int) -> list[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return status.split("Groups:")[1].split("\n")[0].split()


def base_url(spec: InstanceSpec) -> str:
    return f"http://127.0.0.1:{spec.port}"


async def superuser_token(driver: ProcessDriver, spec: InstanceSpec) -> str:
    task = spec.engine.superuser_task(spec.version, spec.layout, EMAIL, PASSWORD)
    code, output = await driver.run_task(spec, task.argv, task.env)
    assert code == 0, output
    async with httpx.AsyncClient(base_url=base_url(spec), trust_env=False) as client:
        response = await client.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def test_start_serves_the_instance(
    proc_driver: ProcessDriver, make_spec: SpecFactory
) -> None:
    spec = make_spec()

    pid = await proc_driver.start(spec)

    observed = await proc_driver.status(spec, pid)
    assert (observed.state, observed.pid, observed.healthy) == (RunState.RUNNING, pid, True)
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{base_url(spec)}/api/health")
    assert response.status_code == 200
    assert response.json()["message"] == "API is healthy."
    assert os.getpgid(pid) == pid  # its own process group and session
    assert os.getsid(pid) == pid


async def test_data_and_migrations_stay_in_the_instance_folder(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    spec = make_spec()
    cwd_before = set(os.listdir(os.getcwd()))
    await proc_driver.start(spec)
    token = await superuser_token(proc_driver, spec)

    async with httpx.AsyncClient(base_url=base_url(spec), trust_env=False) as client:
        response = await client.post(
            "/api/collections",
            headers={"Authorization": token},
            json={"name": "notes", "type": "base", "fields": [{"name": "text", "type": "text"}]},
        )
    assert response.status_code == 200, response.text

    layout = spec.layout
    assert (layout.data_dir / "data.db").is_file()
    assert any(layout.migrations_dir.glob("*_created_notes.js"))  # automigrate wrote it here
    assert set(os.listdir(os.getcwd())) == cwd_before
    strays = [
        path
        for path in driver_settings.data_dir.rglob("pb_*")
        if path.is_dir() and path.parent != layout.root
    ]
    assert strays == []


async def test_start_is_idempotent_and_adopts_a_running_instance(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    spec = make_spec()
    pid = await proc_driver.start(spec)

    assert await proc_driver.start(spec) == pid
    restarted = ProcessDriver(driver_settings)  # a new control plane, knowing no pid
    try:
        assert await restarted.start(spec) == pid
    finally:
        await restarted.aclose()
    assert processes_naming(spec.layout.data_dir) == [pid]


async def test_instances_survive_the_control_plane_and_are_adopted(
    make_spec: SpecFactory, driver_settings: Settings, pb_engine: PocketBaseEngine
) -> None:
    spec = make_spec()
    script = """
        import asyncio, sys
        from pathlib import Path
        from control_plane.drivers.base import InstanceSpec
        from control_plane.drivers.process import ProcessDriver
        from control_plane.engines.base import InstanceLayout
        from control_plane.engines.pocketbase import PocketBaseEngine
        from control_plane.settings import Settings

        engines, data, instance_id, root, port, version = sys.argv[1:]
        engine = PocketBaseEngine(Path(engines), version)
        layout = InstanceLayout(Path(root))
        spec = InstanceSpec(instance_id, "x", engine, version, layout, int(port))
        print(asyncio.run(ProcessDriver(Settings(data_dir=data)).start(spec)))
    """
    args = (pb_engine.root.parent, driver_settings.data_dir, spec.id, spec.layout.root, spec.port)
    control_plane = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(script),
        *map(str, args),
        spec.version,
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await asyncio.wait_for(control_plane.communicate(), 60)
    assert control_plane.returncode == 0
    pid = int(output.split()[-1])  # that control plane has exited now

    fresh = ProcessDriver(driver_settings)
    try:
        observed = await fresh.status(spec, pid)
        assert (observed.state, observed.pid, observed.healthy) == (RunState.RUNNING, pid, True)
        assert psutil.Process(pid).ppid() != os.getpid()

        await fresh.stop(spec, pid)
        assert processes_naming(spec.layout.data_dir) == []
        assert (await fresh.status(spec, pid)).state is RunState.STOPPED
    finally:
        await fresh.aclose()


async def test_a_discarded_driver_leaves_its_instances_running(
    make_spec: SpecFactory, driver_settings: Settings
) -> None:
    spec = make_spec()
    first = ProcessDriver(driver_settings)
    pid = await first.start(spec)
    await first.aclose()
    del first

    second = ProcessDriver(driver_settings)
    try:
        observed = await second.status(spec, pid)
        assert (observed.state, observed.pid, observed.healthy) == (RunState.RUNNING, pid, True)
    finally:
        await second.aclose()


async def test_stop_is_idempotent(proc_driver: ProcessDriver, make_spec: SpecFactory) -> None:
    spec = make_spec()
    pid = await proc_driver.start(spec)
    started = time.monotonic()

    await proc_driver.stop(spec, pid)

    assert time.monotonic() - started < 5  # SIGTERM was enough
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert (await proc_driver.status(spec, pid)).state is RunState.STOPPED
    await proc_driver.stop(spec, pid)
    await proc_driver.stop(spec, None)
    assert await proc_driver.stats(spec, pid) is None


async def test_stop_without_a_pid_finds_the_instance(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    spec = make_spec()
    await proc_driver.start(spec)

    forgetful = ProcessDriver(driver_settings)
    await forgetful.stop(spec, None)
    await forgetful.aclose()

    assert processes_naming(spec.layout.data_dir) == []
    assert (await proc_driver.status(spec, None)).state is RunState.STOPPED


async def test_a_pid_that_is_not_the_instance_is_not_ours(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    spec, other = make_spec(), make_spec()
    pid = await proc_driver.start(spec)
    fresh = ProcessDriver(driver_settings)
    try:
        assert (await fresh.status(spec, os.getpid())).state is RunState.STOPPED
        assert (await fresh.status(other, pid)).state is RunState.STOPPED
        assert await fresh.stats(spec, os.getpid()) is None
        await fresh.stop(other, pid)  # other has no process: nothing to do
    finally:
        await fresh.aclose()
    assert (await proc_driver.status(spec, pid)).healthy


async def test_a_failing_command_raises_with_the_log_tail(
    proc_driver: ProcessDriver, make_spec: SpecFactory
) -> None:
    engine = ScriptEngine("""
        import sys
        print("booting", flush=True)
        print("fatal: the database is on fire", file=sys.stderr)
        sys.exit(3)
    """)
    spec = make_spec(engine=engine, version="1")

    with pytest.raises(StartError) as caught:
        await proc_driver.start(spec)

    reason = caught.value.reason
    assert "exited with code 3" in reason
    assert "booting" in reason
    assert "fatal: the database is on fire" in reason
    assert processes_naming(spec.layout.data_dir) == []


async def test_an_instance_that_never_gets_healthy_is_killed(
    make_spec: SpecFactory, driver_settings: Settings
) -> None:
    engine = ScriptEngine("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stuck", flush=True)
        time.sleep(600)
    """)
    spec = make_spec(engine=engine, version="1")
    driver = ProcessDriver(driver_settings.model_copy(update={"start_timeout_s": 0.5}))

    with pytest.raises(StartError, match=r"was not healthy after 0\.5s") as caught:
        await driver.start(spec)
    await driver.aclose()

    assert "stuck" in caught.value.reason
    assert processes_naming(spec.layout.data_dir) == []


async def test_a_port_held_by_another_listener_is_reported_taken(
    proc_driver: ProcessDriver, make_spec: SpecFactory
) -> None:
    spec = make_spec()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spec.port))
        squatter.listen()

        with pytest.raises(PortTakenError, match=f"port {spec.port} is held") as caught:
            await proc_driver.start(spec)

    assert caught.value.port == spec.port  # the caller moves the instance (test_reconcile)
    assert processes_naming(spec.layout.data_dir) == []


async def test_a_port_bound_elsewhere_is_reported_taken(
    proc_driver: ProcessDriver, make_spec: SpecFactory
) -> None:
    spec = make_spec()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spec.port))  # bound, not listening: connects are refused

        with pytest.raises(PortTakenError):
            await proc_driver.start(spec)

    assert processes_naming(spec.layout.data_dir) == []


async def test_run_task_upserts_a_superuser_who_can_log_in(
    proc_driver: ProcessDriver, make_spec: SpecFactory
) -> None:
    spec = make_spec()
    await proc_driver.start(spec)

    assert await superuser_token(proc_driver, spec)


async def test_run_task_gets_a_fresh_environment_and_the_limits(
    proc_driver: ProcessDriver, make_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    spec = make_spec(env={"APP_MODE": "test"}, memory_limit_mb=256, max_open_files=1000)

    code, output = await proc_driver.run_task(spec, ["/usr/bin/env"])

    assert code == 0
    env = dict(line.split("=", 1) for line in output.splitlines())
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(spec.layout.root),
        "LANG": "C.UTF-8",
        "GOMEMLIMIT": "256MiB",
        "APP_MODE": "test",
    }
    code, output = await proc_driver.run_task(spec, ["/bin/sh", "-c", "pwd; ulimit -n; ulimit -v"])
    assert output.split() == [
        str(spec.layout.root),
        "1000",
        str(address_space_limit_mb(256) * 1024),
    ]
    assert await proc_driver.run_task(spec, ["/nonexistent/tool"]) == (
        127,
        "cannot run /nonexistent/tool: [Errno 2] No such file or directory: '/nonexistent/tool'",
    )


@AS_ROOT
async def test_instances_run_as_their_own_user(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    uid = driver_settings.instance_uid_base + 17
    spec = make_spec(uid=uid)
    neighbour = make_spec(uid=uid + 1)

    pid = await proc_driver.start(spec)

    process = psutil.Process(pid)
    assert process.uids().real == process.uids().effective == uid
    assert process.gids().real == process.gids().effective == uid
    assert supplementary_groups(pid) == []
    root = spec.layout.root.stat()
    assert (stat.S_IMODE(root.st_mode), root.st_uid, root.st_gid) == (0o700, uid, uid)
    assert stat.S_IMODE(spec.layout.root.parent.stat().st_mode) == 0o711
    for path in [spec.layout.log_file, *spec.layout.folders(), spec.layout.data_dir / "data.db"]:
        assert path.stat().st_uid == uid, path
    code, output = await proc_driver.run_task(neighbour, ["/bin/cat", str(spec.layout.log_file)])
    assert code != 0
    # in its sandbox the neighbour's folder does not exist; without one, it may not be read
    assert "No such file or directory" in output or "Permission denied" in output


async def test_memory_limit_cgroup(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    parent = proc_driver.cgroups.v1.get("memory")
    if parent is None:
        pytest.skip("no writable cgroup v1 memory controller here")
    spec = make_spec(memory_limit_mb=200, max_processes=77, cpu_weight=50)
    pid = await proc_driver.start(spec)

    cgroup = parent / f"pocketfleet-{spec.id}"
    assert (cgroup / "memory.limit_in_bytes").read_text().strip() == str(200 * 1024 * 1024)
    assert str(pid) in (cgroup / "cgroup.procs").read_text().split()
    if "pids" in proc_driver.cgroups.v1:
        pids = proc_driver.cgroups.v1["pids"] / f"pocketfleet-{spec.id}"
        assert (pids / "pids.max").read_text().strip() == "77"
    if "cpu" in proc_driver.cgroups.v1:
        cpu = proc_driver.cgroups.v1["cpu"] / f"pocketfleet-{spec.id}"
        assert (cpu / "cpu.shares").read_text().strip() == "512"
    await proc_driver.stop(spec, pid)
    assert not cgroup.exists()

    hog = ScriptEngine("""
        print("allocating", flush=True)
        ballast = bytearray(400 * 1024 * 1024)
        print("allocated", flush=True)
    """)
    hungry = make_spec(engine=hog, version="1", memory_limit_mb=64)
    with pytest.raises(StartError, match="exited with code -9") as caught:
        await proc_driver.start(hungry)  # the kernel's OOM killer ended it
    assert "allocating" in caught.value.reason
    assert "allocated" not in caught.value.reason.splitlines()


async def test_stats_measure_memory_and_cpu(
    proc_driver: ProcessDriver, make_spec: SpecFactory
) -> None:
    spec = make_spec()
    pid = await proc_driver.start(spec)

    stats = await proc_driver.stats(spec, pid)

    assert stats is not None
    assert 5 * 1024 * 1024 < stats.memory_bytes < 500 * 1024 * 1024
    assert stats.cpu_seconds >= 0


async def test_logs_are_read_and_capped(proc_driver: ProcessDriver, make_spec: SpecFactory) -> None:
    spec = make_spec(log_max_bytes=64)
    await proc_driver.start(spec)
    log_file = spec.layout.log_file
    lines = proc_driver.read_logs(spec, 100)
    assert any("Server started at http://127.0.0.1" in line for line in lines)
    assert proc_driver.read_logs(spec, 2) == lines[-2:]
    size = log_file.stat().st_size
    assert size > spec.log_max_bytes

    proc_driver.cap_log(spec)

    assert log_file.stat().st_size == 0
    rotated = log_file.with_name("output.log.1")
    assert rotated.stat().st_size == size
    assert proc_driver.read_logs(spec, 100) == lines  # still readable through the .1 file
    proc_driver.cap_log(spec)  # under the cap now: nothing happens
    assert rotated.stat().st_size == size


async def test_remove_keeps_or_deletes_the_folder(
    proc_driver: ProcessDriver, make_spec: SpecFactory, driver_settings: Settings
) -> None:
    kept, dropped = make_spec(), make_spec()
    await proc_driver.start(kept)
    pid = await proc_driver.start(dropped)
    trash = driver_settings.trash_dir / "2026" / kept.id

    await proc_driver.remove(kept, keep_at=trash)
    await proc_driver.remove(dropped, keep_at=None)

    assert (trash / "pb_data" / "data.db").is_file()
    assert not kept.layout.root.exists()
    assert not dropped.layout.root.exists()
    assert processes_naming(kept.layout.data_dir) == []
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    await proc_driver.remove(kept, keep_at=trash)
    await proc_driver.remove(dropped, keep_at=None)
    assert sorted(p.name for p in trash.parent.iterdir()) == [kept.id]


def test_free_port_skips_taken_and_bound_ports(driver_settings: Settings) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        held = holder.getsockname()[1]
        settings = driver_settings.model_copy(update={"instance_port_range": (held, held + 2)})

        assert free_port(settings, {held + 1}) == held + 2
        with pytest.raises(NoFreePortError):
            free_port(settings, {held + 1, held + 2})
