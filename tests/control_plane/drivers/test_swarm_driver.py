"""The `swarm` driver against a real one-node Swarm (a private `dockerd`, `docker swarm init` on
127.0.0.1) and the real PocketBase image: start, stop (scale to 0), wake (scale to 1), status
from the tasks, adoption by a new driver, a killed task started again, logs, stats, tasks,
refusals, removal; the hostile tenant's view from inside its task; and `pocketfleet serve` with
`PF_DRIVER=swarm` (create, request through the proxy, hibernate, wake, restart).
One dockerd and swarm for the module (`tests/support/dockerd.py`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from control_plane.drivers.base import InstanceSpec, PortTakenError, RunState, StartError
from control_plane.drivers.docker import LABEL_INSTANCE, container_name
from control_plane.drivers.factory import make_driver
from control_plane.drivers.swarm import LABEL_NODE, SwarmDriver
from control_plane.engines.pocketbase import PocketBaseEngine
from control_plane.settings import DEFAULT_POCKETBASE_VERSION, Settings
from tests.control_plane.conftest import SpecFactory
from tests.control_plane.drivers.test_docker_driver import HOSTILE_HOOK
from tests.support.dockerd import PrivateDockerd, unavailable
from tests.support.server import BIN, ServeProcess, running_server, sign_up

EMAIL = "root@example.com"
PASSWORD = "a-long-password-1"
pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@pytest.fixture(scope="module")
def fleet_root() -> Iterator[Path]:
    """Outside /tmp: a task's /tmp is its own (see the docker driver's tests)."""
    root = Path(tempfile.mkdtemp(prefix="pf-swarm-tests-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pb_engine(fleet_root: Path) -> PocketBaseEngine:
    engine = PocketBaseEngine(fleet_root / "engines", DEFAULT_POCKETBASE_VERSION)
    assert engine.ensure_bundled()
    return engine


@pytest.fixture(scope="module")
def swarm() -> Iterator[tuple[PrivateDockerd, str]]:
    with PrivateDockerd() as engine:
        yield engine, engine.init_swarm()


@pytest.fixture(scope="module")
def manager(swarm: tuple[PrivateDockerd, str]) -> Iterator[Any]:
    client = swarm[0].client()
    yield client
    client.close()


@pytest.fixture
def swarm_settings(driver_settings: Settings, swarm: tuple[PrivateDockerd, str]) -> Settings:
    return driver_settings.model_copy(update={"driver": "swarm", "docker_host": swarm[0].host})


@pytest.fixture
async def driver(swarm_settings: Settings) -> AsyncIterator[SwarmDriver]:
    made = make_driver(swarm_settings)
    assert isinstance(made, SwarmDriver)
    yield made
    await made.aclose()


def url(spec: InstanceSpec) -> str:
    return f"http://127.0.0.1:{spec.port}"


def service(manager: Any, spec: InstanceSpec) -> dict[str, Any]:
    found: dict[str, Any] = manager.inspect_service(container_name(spec))
    return found


def running_tasks(manager: Any, spec: InstanceSpec) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = manager.tasks(filters={"service": container_name(spec)})
    return [task for task in tasks if task["Status"]["State"] == "running"]


async def test_start_stop_wake_status_and_adoption(
    driver: SwarmDriver,
    make_spec: SpecFactory,
    manager: Any,
    swarm: tuple[PrivateDockerd, str],
    swarm_settings: Settings,
) -> None:
    spec = make_spec()
    assert (await driver.status(spec, None)).state is RunState.STOPPED
    pid = await driver.start(spec)

    observed = await driver.status(spec, pid)
    assert (observed.state, observed.pid, observed.healthy) == (RunState.RUNNING, pid, True)
    assert await driver.start(spec) == pid  # idempotent
    found = service(manager, spec)
    assert found["Spec"]["Labels"][LABEL_INSTANCE] == spec.id
    assert found["Spec"]["Labels"][LABEL_NODE] == swarm[1]
    template = found["Spec"]["TaskTemplate"]
    assert template["Placement"]["Constraints"] == [f"node.id=={swarm[1]}"]
    assert template["ContainerSpec"]["Image"].startswith("sha256:")  # nothing to pull
    assert found["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    code, output = await driver.run_task(
        spec, [*spec.engine.superuser_task(spec.version, spec.layout, EMAIL, PASSWORD).argv]
    )
    assert code == 0, output

    restarted = SwarmDriver(swarm_settings)  # a new control plane, knowing no pid
    try:
        adopted = await restarted.status(spec, None)
        assert (adopted.state, adopted.pid, adopted.healthy) == (RunState.RUNNING, pid, True)
        assert await restarted.start(spec) == pid
    finally:
        await restarted.aclose()

    await driver.stop(spec, pid)  # hibernation: scaled to 0
    assert (await driver.status(spec, pid)).state is RunState.STOPPED
    assert service(manager, spec)["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
    (task,) = running_tasks(manager, spec)  # (Swarm's agent reports it after its 2 s delay)
    container = manager.inspect_container(task["Status"]["ContainerStatus"]["ContainerID"])
    assert container["State"]["Running"] is False  # stopped at once, by the driver
    assert not await asyncio.to_thread(os.path.exists, f"/proc/{pid}")
    await driver.stop(spec, pid)  # idempotent

    began = time.monotonic()
    woken = await driver.start(spec)  # the same service, scaled to 1
    print(f"swarm wake (scale 0 -> 1, healthy): {(time.monotonic() - began) * 1000:.0f} ms")
    assert woken != pid and service(manager, spec)["ID"] == found["ID"]
    async with httpx.AsyncClient(base_url=url(spec), trust_env=False) as client:
        auth = await client.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
    assert auth.status_code == 200, auth.text  # the data was kept

    os.kill(woken, 9)  # Swarm restarts a killed task (restart policy any, after 2 s) ...
    deadline = time.monotonic() + 20
    while (await driver.status(spec, None)).pid in (woken, None):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    again = await driver.start(spec)  # ... and a start adopts it
    assert again not in (woken, pid)
    assert (await driver.status(spec, again)).healthy
    await driver.stop(spec, again)


async def test_logs_stats_env_and_tasks(
    driver: SwarmDriver, make_spec: SpecFactory, manager: Any, pb_engine: PocketBaseEngine
) -> None:
    spec = make_spec(env={"GREETING": "hello-from-env"}, platform_env={"PF_SOMETHING": "set"})
    spec.layout.hooks_dir.mkdir(parents=True)
    (spec.layout.hooks_dir / "env.pb.js").write_text(
        'routerAdd("GET", "/env", (e) => e.json(200, {greeting: $os.getenv("GREETING"), '
        'platform: $os.getenv("PF_SOMETHING")}))\n'
    )
    assert await driver.stats(spec, None) is None
    assert driver.read_logs(spec, 10) == []
    pid = await driver.start(spec)

    stats = await driver.stats(spec, pid)
    assert stats is not None and stats.memory_bytes > 1_000_000 and stats.cpu_seconds > 0
    assert any("Server started" in line for line in driver.read_logs(spec, 50))
    assert len(driver.read_logs(spec, 1)) == 1
    async with httpx.AsyncClient(base_url=url(spec), trust_env=False) as client:
        seen = (await client.get("/env")).json()
    assert seen == {"greeting": "hello-from-env", "platform": "set"}
    container = service(manager, spec)["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert "hello-from-env" not in " ".join(container["Command"])  # env, not argv
    cmdline = await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)
    assert b"hello-from-env" not in cmdline

    code, output = await driver.run_task(spec, [str(pb_engine.binary(spec.version)), "--help"])
    assert code == 0 and "serve" in output
    await driver.stop(spec, pid)


async def test_refusals_port_taken_broken_engine_foreign_service_and_no_manager(
    driver: SwarmDriver,
    make_spec: SpecFactory,
    manager: Any,
    swarm_settings: Settings,
    tmp_path: Path,
) -> None:
    spec = make_spec()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", spec.port))
        squatter.listen()
        with pytest.raises(PortTakenError):
            await driver.start(spec)
    assert (await driver.status(spec, None)).state is RunState.STOPPED

    broken = make_spec()
    (broken.layout.data_dir / "data.db").mkdir(parents=True)  # PocketBase cannot open it
    with pytest.raises(StartError) as failed:
        await driver.start(broken)
    assert "exited" in failed.value.reason and "last log lines" in failed.value.reason
    assert (await driver.status(broken, None)).state is RunState.STOPPED  # scaled to 0
    assert service(manager, broken)["Spec"]["Mode"]["Replicated"]["Replicas"] == 0

    foreign = make_spec()
    image = await asyncio.to_thread(driver._image_id, foreign)
    manager.create_service(
        docker.types.TaskTemplate(docker.types.ContainerSpec(image, command=["/none"])),
        name=container_name(foreign),
        mode=docker.types.ServiceMode("replicated", replicas=0),
    )
    try:
        with pytest.raises(StartError, match="exists and is not its own"):
            await driver.start(foreign)
        with pytest.raises(StartError, match="exists and is not its own"):
            await driver.status(foreign, None)
    finally:
        manager.remove_service(container_name(foreign))

    node = manager.inspect_node(manager.info()["Swarm"]["NodeID"])
    drained = {**node["Spec"], "Availability": "drain"}
    manager.update_node(node["ID"], node["Version"]["Index"], drained)
    try:
        with pytest.raises(StartError, match="no node with pocketfleet's label is ready"):
            await driver.start(make_spec())
    finally:
        node = manager.inspect_node(node["ID"])
        manager.update_node(
            node["ID"], node["Version"]["Index"], {**drained, "Availability": "active"}
        )

    nowhere = swarm_settings.model_copy(update={"docker_host": f"unix://{tmp_path}/no.sock"})
    lost = SwarmDriver(nowhere)
    try:
        with pytest.raises(StartError, match="does not answer"):
            await lost.start(spec)
        with pytest.raises(StartError):  # never "stopped" when nobody can say
            await lost.status(spec, None)
        assert lost.read_logs(spec, 10) == []
    finally:
        await lost.aclose()


async def test_an_engine_outside_a_swarm_is_refused(
    make_spec: SpecFactory, driver_settings: Settings
) -> None:
    with PrivateDockerd() as plain:
        settings = driver_settings.model_copy(update={"driver": "swarm", "docker_host": plain.host})
        alone = SwarmDriver(settings)
        try:
            with pytest.raises(StartError, match="not a swarm manager"):
                await alone.start(make_spec())
        finally:
            await alone.aclose()


async def test_remove_keeps_the_folder_where_asked_and_leaves_no_service(
    driver: SwarmDriver, make_spec: SpecFactory, manager: Any, tmp_path: Path
) -> None:
    spec = make_spec()
    await driver.start(spec)
    kept = tmp_path / "trash" / spec.id

    await driver.remove(spec, keep_at=kept)
    await driver.remove(spec, keep_at=kept)  # idempotent

    assert (kept / "pb_data" / "data.db").is_file()
    assert not spec.layout.root.exists()
    assert manager.services(filters={"label": f"{LABEL_INSTANCE}={spec.id}"}) == []
    assert manager.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={spec.id}"}) == []
    assert (await driver.status(spec, None)).state is RunState.STOPPED


async def test_a_hostile_tenant_sees_only_its_own_folder(
    driver: SwarmDriver,
    make_spec: SpecFactory,
    manager: Any,
    pb_engine: PocketBaseEngine,
    driver_settings: Settings,
) -> None:
    uid = driver_settings.instance_uid_base + 6000 + os.getpid() % 1000
    victim = make_spec(uid=uid + 1)
    await driver.start(victim)
    (victim.layout.data_dir / "secret.txt").write_text("victim's secret")
    await driver.stop(victim, None)
    tenant = make_spec(uid=uid, memory_limit_mb=200, max_processes=100)
    tenant.layout.hooks_dir.mkdir(parents=True)
    hook = (
        HOSTILE_HOOK.replace("OTHER", str(victim.layout.root.absolute()))
        .replace("OWN", str(tenant.layout.root.absolute()))
        .replace("BINARY", str(pb_engine.binary(tenant.version)))
    )
    (tenant.layout.hooks_dir / "probe.pb.js").write_text(hook)

    pid = await driver.start(tenant)
    async with httpx.AsyncClient(base_url=url(tenant), trust_env=False) as client:
        response = await client.get("/probe")
    assert response.status_code == 200, response.text
    seen = response.json()

    assert "no such file or directory" in seen["other"]
    assert "no such file or directory" in seen["otherFolder"]
    assert "read-only file system" in seen["rootWrite"]
    assert "read-only file system" in seen["binaryWrite"]
    assert seen["tmpWrite"] == seen["ownWrite"] == "written"
    status = dict(line.split(":", 1) for line in seen["status"].splitlines() if ":" in line)
    assert status["Uid"].split() == [str(uid)] * 4
    assert status["Gid"].split() == [str(uid)] * 4
    assert set(status["Groups"].split()) <= {str(uid)}
    assert status["CapEff"].strip() == status["CapBnd"].strip() == "0000000000000000"
    # no `no-new-privileges` on Swarm 20.10 services (API 1.41): NoNewPrivs stays 0; with no
    # capability in the bounding set a set-uid file gains nothing
    assert set(seen["hostFiles"].split(",")) == {"hostname", "hosts", "mtab", "resolv.conf", "ssl"}
    assert seen["certs"] == "true"
    assert seen["processes"] == "1"
    assert (tenant.layout.data_dir / "mine").stat().st_uid == uid
    task = running_tasks(manager, tenant)[0]
    host_config = manager.inspect_container(task["Status"]["ContainerStatus"]["ContainerID"])[
        "HostConfig"
    ]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert host_config["NetworkMode"] == "host"
    assert host_config["Memory"] == 200 << 20
    assert host_config["PidsLimit"] == 100
    assert pid == task["Status"]["ContainerStatus"]["PID"]
    await driver.stop(tenant, pid)


def test_serve_with_the_swarm_driver(swarm: tuple[PrivateDockerd, str], manager: Any) -> None:
    """`pocketfleet serve` with PF_DRIVER=swarm: an instance created through the API answers
    through the embedded proxy, hibernates (scaled to 0), wakes on a request (scaled to 1), and
    a restarted control plane adopts its running task."""
    env = {"PF_DRIVER": "swarm", "PF_DOCKER_HOST": swarm[0].host, "PF_IDLE_TIMEOUT_S": "0"}
    with running_server(env=env) as server, server.client() as api:
        api.headers["Authorization"] = f"Bearer {sign_up(api, 'swarm@example.com')}"
        body = {"name": "swarmed", "superuser_password": PASSWORD}
        created = api.post("/api/instances", json=body)
        assert created.status_code == 201, created.text
        started = api.post("/api/instances/swarmed/start").json()
        assert started["status"] == "running", started
        labelled = {"label": f"{LABEL_INSTANCE}={started['id']}"}
        (found,) = manager.services(filters=labelled)
        with server.instance_client("swarmed") as pb:
            auth = pb.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": "swarm@example.com", "password": PASSWORD},
            )
            assert auth.status_code == 200, auth.text
            pb.headers["Authorization"] = auth.json()["token"]
            notes = {"name": "notes", "type": "base", "fields": [{"name": "t", "type": "text"}]}
            assert pb.post("/api/collections", json=notes).status_code == 200
            assert pb.post("/api/collections/notes/records", json={"t": "kept"}).is_success

            slept = api.post("/api/instances/swarmed/hibernate")
            assert slept.status_code == 200 and slept.json()["status"] == "hibernated"
            assert manager.inspect_service(found["ID"])["Spec"]["Mode"]["Replicated"] == {
                "Replicas": 0
            }

            began = time.monotonic()
            listed = pb.get("/api/collections/notes/records")  # wakes it
            woke_s = time.monotonic() - began
            assert listed.status_code == 200, listed.text
            assert [item["t"] for item in listed.json()["items"]] == ["kept"]
        assert api.get("/api/instances/swarmed").json()["status"] == "running"
        print(f"wake through the proxy (swarm driver): {woke_s * 1000:.0f} ms")
        placed = manager.services(filters={"label": LABEL_NODE})  # this test's and the others'
        committed = sum(
            one["Spec"]["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] for one in placed
        )
        check_nodes(server, api, swarm[1], started["id"], committed)

        tasks = [
            t
            for t in manager.tasks(filters={"service": found["ID"]})
            if t["Status"]["State"] == "running"
        ]
        server.stop()  # a restart of the control plane: the task is adopted as it runs
        server.start()
        with server.instance_client("swarmed") as pb:
            assert pb.get("/api/health").status_code == 200
        assert api.get("/api/instances/swarmed").json()["status"] == "running"
        after = [
            t
            for t in manager.tasks(filters={"service": found["ID"]})
            if t["Status"]["State"] == "running"
        ]
        assert [t["ID"] for t in after] == [t["ID"] for t in tasks]
    assert manager.services(filters=labelled)[0]["Spec"]["Mode"]["Replicated"] == {"Replicas": 0}


def check_nodes(
    server: ServeProcess, tenant: httpx.Client, node_id: str, instance_id: str, memory: int
) -> None:
    """`/api/nodes` and `pocketfleet nodes` on the swarm: the one labelled node, with the
    instance counted on it and recorded on the instance; operators only."""
    assert tenant.get("/api/nodes").status_code == 403
    with server.client() as api:
        assert api.get("/api/nodes").status_code == 401
        token = sign_up(api, "swarm-operator@example.com")
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", "swarm-operator@example.com"],
        env=server.env(), check=True, capture_output=True,
    )  # fmt: skip
    with server.client(token) as operator:
        (node,) = operator.get("/api/nodes").json()
        joined = operator.get("/api/nodes/join-command").json()
    assert (node["id"], node["role"], node["state"], node["address"]) == (
        node_id, "manager", "ready", "127.0.0.1"
    )  # fmt: skip
    assert (node["instances_running"], node["instances_asleep"]) == (1, 0)
    assert node["memory_free_bytes"] == node["memory_bytes"] - memory  # its limit, committed
    assert node["disk_bytes"] > 0  # the control plane's own node
    with sqlite3.connect(server.data_dir / "control.db") as db:
        (recorded,) = db.execute(
            "SELECT node FROM instance WHERE id = ?", (instance_id,)
        ).fetchone()
    assert recorded == node_id
    command = joined["command"].split()
    assert command[:4] == ["docker", "swarm", "join", "--token"]
    assert command[4].startswith("SWMTKN-") and command[5].startswith("127.0.0.1:")
    assert "pocketfleet.node=true" in joined["label_command"]

    env = {**server.env(), "PF_URL": server.url, "PF_TOKEN": token, "COLUMNS": "200"}
    listed = subprocess.run(
        [str(BIN / "pocketfleet"), "nodes", "ls"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "manager" in listed.stdout and "ready" in listed.stdout
    printed = subprocess.run(
        [str(BIN / "pocketfleet"), "nodes", "join-command"], env=env, capture_output=True, text=True
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines()[0] == joined["command"]
