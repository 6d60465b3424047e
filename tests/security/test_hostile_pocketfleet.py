"""The same attacks from an instance of the `pocketfleet` engine (our Python runtime).

The runtime runs no tenant code of its own (no hooks), so "tenant code" here is what would
run if it did: a Python program executed in the instance's sandbox, as its uid, with its
limits, by the process driver's `run_task` (the way the control plane runs an instance's
one-off tasks), with the engine's own interpreter. The sandbox of this engine shows more than
PocketBase's (the interpreter, the virtual environment and the runtime's package, read-only),
which is what these attacks go for besides the rest: the shared interpreter's packages are
where a write would reach every other instance and the control plane itself.
"""

from __future__ import annotations

import asyncio
import json
import sysconfig
from pathlib import Path
from typing import Any

import psutil
import pytest

import instance_runtime
from control_plane.drivers.base import InstanceSpec
from control_plane.drivers.process import ProcessDriver
from control_plane.engines.base import InstanceLayout
from control_plane.engines.pocketfleet import PocketfleetEngine
from control_plane.env_rules import PLATFORM_ENV
from control_plane.settings import Settings
from tests.security.hostile import (
    CONTROL_PLANE_SECRETS,
    Hostile,
    Instance,
    Tenant,
    Victim,
    litestream_config,
    status_field,
    unique,
)
from tests.support.server import ServeProcess

TENANT_CODE = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])
out = {"uid": os.getuid(), "pid": os.getpid(), "reads": {}, "lists": {}, "writes": {}}
for path in args["reads"]:
    try:
        with open(path, "rb") as f:
            out["reads"][path] = "read: " + f.read().decode(errors="replace")
    except OSError as err:
        out["reads"][path] = "refused: " + err.strerror
for path in args["lists"]:
    try:
        out["lists"][path] = sorted(os.listdir(path))
    except OSError as err:
        out["lists"][path] = "refused: " + err.strerror
for path in args["writes"]:
    try:
        with open(path, "w") as f:
            f.write("owned")
        out["writes"][path] = "written"
    except OSError as err:
        out["writes"][path] = "refused: " + err.strerror
out["procs"] = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out["procs"][pid] = f.read().decode(errors="replace")
        except OSError:
            pass
out["environ"] = dict(os.environ)
children = []
try:
    for _ in range(args["bomb"]):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    out["fork_error"] = None
except OSError as err:
    out["fork_error"] = err.strerror
out["forked"] = len(children)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


def run_tenant_code(serve: ServeProcess, instance: Instance, args: dict[str, Any]) -> Any:
    """`TENANT_CODE` run like the instance's own tasks: in its sandbox, as its uid, with its
    limits (a driver of our own over the serve's data folder; the folder is the instance's)."""
    settings = Settings(data_dir=serve.data_dir, zygote=False)
    engine = PocketfleetEngine()
    spec = InstanceSpec(
        id=instance.id,
        name=instance.name,
        engine=engine,
        version=engine.default_version(),
        layout=InstanceLayout(instance.folder),
        port=0,  # a task listens on nothing
        uid=instance.uid,
        max_processes=settings.instance_max_processes,
    )

    async def run() -> tuple[int, str]:
        driver = ProcessDriver(settings)
        try:
            assert driver.sandboxed(spec)
            argv = [engine.python, "-I", "-c", TENANT_CODE, json.dumps(args)]
            return await driver.run_task(spec, argv)
        finally:
            await driver.aclose()

    code, output = asyncio.run(run())
    assert code == 0, output
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runtime_attacker(attacker_tenant: Tenant, victim: Victim, hostile: Hostile) -> Instance:
    """The attacker's instance of the `pocketfleet` engine (running, like any other)."""
    return attacker_tenant.create(unique("pyevil"), engine="pocketfleet")


@pytest.fixture(scope="module")
def attacked(
    serve: ServeProcess, runtime_attacker: Instance, victim: Victim, hostile: Hostile
) -> dict[str, Any]:
    data = serve.data_dir.resolve()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    runtime_package = Path(instance_runtime.__file__).parent
    args = {
        "reads": [
            str(victim.instance.database),
            str(hostile.instance.folder / "pb_hooks" / "attack.pb.js"),
            str(data / "control.db"),
            str(data / "secret.key"),
            str(litestream_config(data, victim.instance.id)),
            "/etc/shadow",
        ],
        "lists": [
            str(victim.instance.folder),
            str(data / "backups"),
            str(data / "instances"),
            str(data),
        ],
        "writes": [
            f"/usr/pf-attack-{runtime_attacker.id}",
            f"/etc/pf-attack-{runtime_attacker.id}",
            str(site_packages / "sitecustomize.py"),
            str(runtime_package / "__init__.py"),
            str(victim.instance.folder / "pb_hooks" / "evil.pb.js"),
            str(data / "control.db"),
            str(runtime_attacker.folder / "pb_data" / "mine.txt"),
        ],
        "bomb": 600,
    }
    result: dict[str, Any] = run_tenant_code(serve, runtime_attacker, args)
    return result


def test_it_runs_as_its_own_uid(attacked: dict[str, Any], runtime_attacker: Instance) -> None:
    assert attacked["uid"] == runtime_attacker.uid
    assert attacked["pid"] == 1  # the first process of its own pid namespace


def test_no_other_file_is_readable(attacked: dict[str, Any], victim: Victim) -> None:
    for path, got in attacked["reads"].items():
        assert got.startswith("refused: "), f"{path}: {got[:200]}"
        assert victim.secret not in got


def test_no_other_folder_is_listed(
    attacked: dict[str, Any], runtime_attacker: Instance, serve: ServeProcess
) -> None:
    data = str(serve.data_dir.resolve())
    lists = attacked["lists"]
    for path, got in lists.items():
        if path == f"{data}/instances":
            assert got == [runtime_attacker.id]
        elif path == data:  # only the folders on the way to what it is given
            assert set(got) <= {"instances", "engines", "run"}, got
        else:
            assert isinstance(got, str) and got.startswith("refused: "), f"{path}: {got}"


def test_it_writes_in_its_own_folder_only(
    attacked: dict[str, Any], runtime_attacker: Instance
) -> None:
    own = str(runtime_attacker.folder / "pb_data" / "mine.txt")
    for path, got in attacked["writes"].items():
        if path == own:
            assert got == "written"
        else:
            assert got.startswith("refused: "), f"{path}: {got}"
            assert not Path(path).exists() or Path(path).read_bytes() != b"owned", path


def test_its_proc_and_environment_hold_nothing_of_others(
    attacked: dict[str, Any], victim: Victim
) -> None:
    assert list(attacked["procs"]) == ["1"]  # itself (its fork bomb was over)
    env = attacked["environ"]
    assert not {n for n in env if n.startswith("PF_") and n not in PLATFORM_ENV}, env
    assert not set(CONTROL_PLANE_SECRETS.values()) & set(env.values())
    assert victim.env_secret not in json.dumps(attacked)


def test_its_fork_bomb_stops_at_the_process_limit(attacked: dict[str, Any]) -> None:
    assert attacked["fork_error"] == "Resource temporarily unavailable"
    assert attacked["forked"] < 256


def test_its_server_is_sandboxed_with_none_of_our_environment(
    runtime_attacker: Instance,
) -> None:
    """The running server (not a zygote's child: those would keep the control plane's
    environment block, readable in its /proc/self/environ) is a sandbox's pid 1, and its
    environment holds nothing of the control plane's."""
    procs = [
        proc
        for proc in psutil.process_iter(["uids", "status"])
        if proc.info["uids"] and proc.info["uids"].real == runtime_attacker.uid
    ]
    assert procs
    for proc in procs:
        nspid = status_field(Path(f"/proc/{proc.pid}/status").read_text(), "NSpid").split()
        assert len(nspid) == 2, nspid  # a pid namespace of its own
        env = proc.environ()
        assert not {n for n in env if n.startswith("PF_") and n not in PLATFORM_ENV}, env
        assert not set(CONTROL_PLANE_SECRETS.values()) & set(env.values())


def test_the_instance_serves_on(
    attacked: dict[str, Any], runtime_attacker: Instance, serve: ServeProcess, victim: Victim
) -> None:
    with serve.instance_client(runtime_attacker.name) as client:
        assert client.get("/api/health").status_code == 200
    assert victim.secrets_seen() == [victim.secret]
