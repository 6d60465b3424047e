"""The `docker` driver against a real, private `dockerd` and the real PocketBase image it builds:
start, stop, status, adoption by a new driver, stats, logs, tasks, replacement on a changed
spec, refusals, removal; a hostile tenant's view from inside its container; and one run of
`pocketfleet serve` with `PF_DRIVER=docker` (create, request through the proxy, hibernate,
wake). One dockerd for the module (`tests/support/dockerd.py`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from control_plane.drivers.base import InstanceSpec, PortTakenError, RunState, StartError
from control_plane.drivers.docker import LABEL_INSTANCE, DockerDriver, container_name
from control_plane.drivers.docker_images import REPOSITORY_PREFIX, image_contents
from control_plane.engines.pocketbase import PocketBaseEngine
from control_plane.engines.pocketfleet import PocketfleetEngine
from control_plane.settings import DEFAULT_POCKETBASE_VERSION, Settings
from tests.control_plane.conftest import SpecFactory
from tests.support.dockerd import PrivateDockerd, unavailable
from tests.support.server import running_server, sign_up

EMAIL = "root@example.com"
PASSWORD = "a-long-password-1"
pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@pytest.fixture(scope="module")
def fleet_root() -> Iterator[Path]:
    """Engines and instance folders outside /tmp (unlike the other driver tests): a container's
    /tmp is its own, so the engine must run from the image's copy of its binary, as it does
    in production (`serve` below keeps its data in /tmp: the binary bound over /tmp)."""
    root = Path(tempfile.mkdtemp(prefix="pf-docker-tests-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pb_engine(fleet_root: Path) -> PocketBaseEngine:
    engine = PocketBaseEngine(fleet_root / "engines", DEFAULT_POCKETBASE_VERSION)
    assert engine.ensure_bundled()
    return engine


@pytest.fixture(scope="module")
def dockerd() -> Iterator[PrivateDockerd]:
    with PrivateDockerd() as engine:
        yield engine


@pytest.fixture(scope="module")
def engine_api(dockerd: PrivateDockerd) -> Iterator[docker.APIClient]:
    client = dockerd.client()
    yield client
    client.close()


@pytest.fixture
def docker_settings(driver_settings: Settings, dockerd: PrivateDockerd) -> Settings:
    return driver_settings.model_copy(update={"driver": "docker", "docker_host": dockerd.host})


@pytest.fixture
async def driver(docker_settings: Settings) -> AsyncIterator[DockerDriver]:
    made = DockerDriver(docker_settings)
    yield made
    await made.aclose()


@pytest.fixture
def uid(driver_settings: Settings) -> int:
    return driver_settings.instance_uid_base + 5000 + os.getpid() % 1000


def url(spec: InstanceSpec) -> str:
    return f"http://127.0.0.1:{spec.port}"


def inspect(api: docker.APIClient, spec: InstanceSpec) -> dict[str, Any]:
    info: dict[str, Any] = api.inspect_container(container_name(spec))
    return info


def proc_file(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text(errors="replace")


def proc_status(pid: int) -> dict[str, str]:
    lines = proc_file(pid, "status").splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


async def test_start_stop_status_and_wake_keep_the_data(
    driver: DockerDriver, make_spec: SpecFactory, engine_api: docker.APIClient
) -> None:
    spec = make_spec()
    pid = await driver.start(spec)

    observed = await driver.status(spec, pid)
    assert (observed.state, observed.pid, observed.healthy) == (RunState.RUNNING, pid, True)
    assert await driver.start(spec) == pid  # idempotent
    info = inspect(engine_api, spec)
    assert info["State"]["Pid"] == pid
    assert info["Config"]["Labels"][LABEL_INSTANCE] == spec.id
    assert info["Config"]["Image"].startswith(f"{REPOSITORY_PREFIX}pocketbase:0.40.6-")
    # the host's only file system in it is the instance's folder (the binary is the image's)
    assert [m["Destination"] for m in info["Mounts"]] == [str(spec.layout.root.absolute())]
    code, output = await driver.run_task(
        spec, [*spec.engine.superuser_task(spec.version, spec.layout, EMAIL, PASSWORD).argv]
    )
    assert code == 0, output
    assert (spec.layout.data_dir / "data.db").is_file()  # the data is in the instance folder

    await driver.stop(spec, pid)
    assert (await driver.status(spec, pid)).state is RunState.STOPPED
    await driver.stop(spec, pid)  # idempotent
    first_id = info["Id"]

    woken = await driver.start(spec)  # the same container, started again
    assert inspect(engine_api, spec)["Id"] == first_id
    async with httpx.AsyncClient(base_url=url(spec), trust_env=False) as client:
        auth = await client.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
    assert auth.status_code == 200, auth.text
    await driver.stop(spec, woken)


async def test_a_new_driver_adopts_the_running_container(
    driver: DockerDriver, make_spec: SpecFactory, docker_settings: Settings
) -> None:
    spec = make_spec()
    pid = await driver.start(spec)

    restarted = DockerDriver(docker_settings)  # a new control plane, knowing no pid
    try:
        observed = await restarted.status(spec, None)
        assert (observed.state, observed.pid, observed.healthy) == (RunState.RUNNING, pid, True)
        assert restarted.seems_alive(pid)
        assert await restarted.start(spec) == pid
        await restarted.stop(spec, None)
    finally:
        await restarted.aclose()
    assert (await driver.status(spec, pid)).state is RunState.STOPPED


async def test_stats_logs_env_and_tasks(
    driver: DockerDriver,
    make_spec: SpecFactory,
    engine_api: docker.APIClient,
    pb_engine: PocketBaseEngine,
) -> None:
    spec = make_spec(env={"GREETING": "hello-from-env"}, platform_env={"PF_SOMETHING": "set"})
    spec.layout.hooks_dir.mkdir(parents=True)
    (spec.layout.hooks_dir / "env.pb.js").write_text(
        'routerAdd("GET", "/env", (e) => e.json(200, {greeting: $os.getenv("GREETING"), '
        'platform: $os.getenv("PF_SOMETHING"), home: $os.getenv("HOME")}))\n'
    )
    assert await driver.stats(spec, None) is None
    pid = await driver.start(spec)

    stats = await driver.stats(spec, pid)
    assert stats is not None and stats.memory_bytes > 1_000_000 and stats.cpu_seconds > 0
    assert any("Server started" in line for line in driver.read_logs(spec, 50))
    assert len(driver.read_logs(spec, 1)) == 1
    async with httpx.AsyncClient(base_url=url(spec), trust_env=False) as client:
        seen = (await client.get("/env")).json()
    assert seen == {
        "greeting": "hello-from-env",
        "platform": "set",
        "home": str(spec.layout.root.absolute()),
    }
    info = inspect(engine_api, spec)
    assert "hello-from-env" not in " ".join([info["Path"], *info["Args"]])  # env, not argv
    assert "hello-from-env" not in proc_file(pid, "cmdline")

    code, output = await driver.run_task(spec, [str(pb_engine.binary(spec.version)), "--help"])
    assert code == 0 and "serve" in output
    code, output = await driver.run_task(spec, ["/no/such/program"])
    assert code == 127 and "/no/such/program" in output
    tasks = engine_api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={spec.id}"})
    assert [c["Names"] for c in tasks] == [[f"/{container_name(spec)}"]]  # tasks removed
    await driver.stop(spec, pid)


async def test_a_changed_spec_replaces_the_stopped_container(
    driver: DockerDriver, make_spec: SpecFactory, engine_api: docker.APIClient
) -> None:
    spec = make_spec(memory_limit_mb=256, max_processes=64)
    pid = await driver.start(spec)
    before = inspect(engine_api, spec)
    assert before["HostConfig"]["Memory"] == 256 << 20
    assert before["HostConfig"]["PidsLimit"] == 64
    await driver.stop(spec, pid)

    bigger = dataclasses.replace(spec, memory_limit_mb=300, cpu_weight=200)
    await driver.start(bigger)
    after = inspect(engine_api, spec)
    assert after["Id"] != before["Id"]
    assert after["HostConfig"]["Memory"] == after["HostConfig"]["MemorySwap"] == 300 << 20
    assert after["HostConfig"]["CpuShares"] == 2048
    await driver.stop(bigger, None)


async def test_refusals_port_taken_broken_engine_and_no_image(
    driver: DockerDriver, make_spec: SpecFactory
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
    assert (await driver.status(broken, None)).state is RunState.STOPPED

    ours = make_spec(engine=PocketfleetEngine(), version=PocketfleetEngine().default_version())
    with pytest.raises(StartError, match="needs a root file system"):
        await driver.start(ours)


async def test_refusals_a_foreign_container_and_an_unreachable_engine(
    driver: DockerDriver,
    make_spec: SpecFactory,
    engine_api: docker.APIClient,
    docker_settings: Settings,
    tmp_path: Path,
) -> None:
    spec = make_spec()
    image = await asyncio.to_thread(driver.images().ensure, spec.engine, spec.version)
    engine_api.create_container(image, ["/none"], name=container_name(spec))  # not labelled
    try:
        with pytest.raises(StartError, match="exists and is not its own"):
            await driver.start(spec)
    finally:
        engine_api.remove_container(container_name(spec), force=True)

    nowhere = docker_settings.model_copy(update={"docker_host": f"unix://{tmp_path}/no.sock"})
    lost = DockerDriver(nowhere)
    try:
        with pytest.raises(StartError, match="does not answer"):
            await lost.start(spec)
        with pytest.raises(StartError):  # never "stopped" when nobody can say
            await lost.status(spec, None)
        assert lost.read_logs(spec, 10) == []
    finally:
        await lost.aclose()


async def test_remove_keeps_the_folder_where_asked_and_leaves_no_container(
    driver: DockerDriver, make_spec: SpecFactory, engine_api: docker.APIClient, tmp_path: Path
) -> None:
    spec = make_spec()
    await driver.start(spec)
    kept = tmp_path / "trash" / spec.id

    await driver.remove(spec, keep_at=kept)
    await driver.remove(spec, keep_at=kept)  # idempotent

    assert (kept / "pb_data" / "data.db").is_file()
    assert not spec.layout.root.exists()
    labelled = engine_api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={spec.id}"})
    assert labelled == []
    assert (await driver.status(spec, None)).state is RunState.STOPPED


def test_the_image_holds_only_the_binary_and_certificates(
    make_spec: SpecFactory, engine_api: docker.APIClient
) -> None:
    spec = make_spec()
    contents = image_contents(spec.engine, spec.version)
    assert [path.name for path in contents] == ["0.40.6", "pocketbase", "ca-certificates.crt"]


HOSTILE_HOOK = """
routerAdd("GET", "/probe", (e) => {
  const attempt = (f) => { try { return String(f()) } catch (err) { return "error: " + err } };
  return e.json(200, {
    other: attempt(() => toString($os.readFile("OTHER/pb_data/secret.txt"))),
    otherFolder: attempt(() => $os.readDir("OTHER").length),
    rootWrite: attempt(() => { $os.writeFile("/planted", "x", 420); return "written" }),
    binaryWrite: attempt(() => { $os.writeFile("BINARY", "x", 420); return "written" }),
    tmpWrite: attempt(() => { $os.writeFile("/tmp/scratch", "x", 420); return "written" }),
    ownWrite: attempt(() => { $os.writeFile("OWN/pb_data/mine", "x", 420); return "written" }),
    status: attempt(() => toString($os.readFile("/proc/self/status"))),
    hostFiles: attempt(() => $os.readDir("/etc").map((entry) => entry.name()).join(",")),
    certs: attempt(() => toString($os.readFile("/etc/ssl/certs/ca-certificates.crt"))
      .includes("BEGIN CERTIFICATE")),
    processes: attempt(() => $os.readDir("/proc").filter((d) => /^[0-9]+$/.test(d.name())).length),
  })
})
"""


async def test_a_hostile_tenant_sees_only_its_own_folder(
    driver: DockerDriver,
    make_spec: SpecFactory,
    engine_api: docker.APIClient,
    pb_engine: PocketBaseEngine,
    uid: int,
) -> None:
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
    assert set(status["Groups"].split()) <= {str(uid)}  # no group but its own
    assert status["CapEff"].strip() == status["CapBnd"].strip() == "0000000000000000"
    assert status["NoNewPrivs"].strip() == "1"
    # /etc: the CA certificates, and what the engine writes for every container (its own
    # copies of the names it resolves), no passwd, shadow or any other file of the host's
    assert set(seen["hostFiles"].split(",")) == {"hostname", "hosts", "mtab", "resolv.conf", "ssl"}
    assert seen["certs"] == "true"  # the image's CA certificates, for outbound TLS
    assert seen["processes"] == "1"  # its own pid namespace: only itself
    assert proc_status(pid)["Uid"].split()[0] == str(uid)  # as seen from the host
    assert (tenant.layout.data_dir / "mine").stat().st_uid == uid
    host_config = inspect(engine_api, tenant)["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert host_config["NetworkMode"] == "host"
    assert host_config["Memory"] == 200 << 20
    assert host_config["PidsLimit"] == 100
    await driver.stop(tenant, pid)


def test_serve_with_the_docker_driver(
    dockerd: PrivateDockerd, engine_api: docker.APIClient
) -> None:
    """`pocketfleet serve` with PF_DRIVER=docker: an instance created through the API answers
    through the embedded proxy, hibernates (its container stops), wakes on a request, and a
    restarted control plane adopts its running container."""
    env = {"PF_DRIVER": "docker", "PF_DOCKER_HOST": dockerd.host, "PF_IDLE_TIMEOUT_S": "0"}
    with running_server(env=env) as server, server.client() as api:
        api.headers["Authorization"] = f"Bearer {sign_up(api, 'docker@example.com')}"
        body = {"name": "boxed", "superuser_password": PASSWORD}
        created = api.post("/api/instances", json=body)
        assert created.status_code == 201, created.text
        started = api.post("/api/instances/boxed/start").json()
        assert started["status"] == "running", started
        labelled = {"label": f"{LABEL_INSTANCE}={started['id']}"}
        (container,) = engine_api.containers(filters=labelled)
        assert container["State"] == "running"
        with server.instance_client("boxed") as pb:
            auth = pb.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": "docker@example.com", "password": PASSWORD},
            )
            assert auth.status_code == 200, auth.text
            pb.headers["Authorization"] = auth.json()["token"]
            notes = {"name": "notes", "type": "base", "fields": [{"name": "t", "type": "text"}]}
            assert pb.post("/api/collections", json=notes).status_code == 200
            assert pb.post("/api/collections/notes/records", json={"t": "kept"}).is_success

            slept = api.post("/api/instances/boxed/hibernate")
            assert slept.status_code == 200 and slept.json()["status"] == "hibernated"
            (container,) = engine_api.containers(all=True, filters=labelled)
            assert container["State"] == "exited"

            began = time.monotonic()
            listed = pb.get("/api/collections/notes/records")  # wakes it
            woke_s = time.monotonic() - began
            assert listed.status_code == 200, listed.text
            assert [item["t"] for item in listed.json()["items"]] == ["kept"]
        assert api.get("/api/instances/boxed").json()["status"] == "running"
        (container,) = engine_api.containers(filters=labelled)
        assert container["State"] == "running"
        print(f"wake through the proxy (docker driver): {woke_s * 1000:.0f} ms")

        started_at = engine_api.inspect_container(container["Id"])["State"]["StartedAt"]
        server.stop()  # a restart of the control plane: the container is adopted as it runs
        server.start()
        with server.instance_client("boxed") as pb:
            assert pb.get("/api/health").status_code == 200
        assert api.get("/api/instances/boxed").json()["status"] == "running"
        assert engine_api.inspect_container(container["Id"])["State"]["StartedAt"] == started_at
    assert engine_api.containers(filters=labelled) == []  # `pocketfleet down` stopped it
