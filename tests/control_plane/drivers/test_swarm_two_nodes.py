"""The `swarm` driver on two nodes: a manager (a private dockerd on the host, advertised on a
veth address) and a worker (a second dockerd in a network namespace of its own, joined as a
worker); both labelled for pocketfleet. New instances are placed by free memory (the second
goes to the other node), an instance on the worker listens on the worker's address and is
dialled there, stops and wakes there with its data (the folder is on the one file system both
engines share, as a node's local disk would be). The worker gets the image from the driver
(`docker save` on the manager's engine, `docker load` into the worker's, named by
`PF_SWARM_NODE_ENGINES`; no registry). Through `pocketfleet serve`: an instance on the worker
is used through the embedded proxy (its route's upstream is the worker's address) and recorded
on its node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from control_plane.drivers.base import RunState
from control_plane.drivers.docker import LABEL_INSTANCE, container_name
from control_plane.drivers.swarm import LABEL_NODE, SwarmDriver
from control_plane.engines.pocketbase import PocketBaseEngine
from control_plane.settings import DEFAULT_POCKETBASE_VERSION, Settings
from tests.control_plane.conftest import SpecFactory
from tests.support.dockerd import NetworkNamespace, PrivateDockerd, unavailable
from tests.support.server import BIN, ServeProcess, running_server, sign_up

PASSWORD = "a-long-password-1"

pytestmark = pytest.mark.skipif(
    unavailable() is not None or shutil.which("nsenter") is None, reason=str(unavailable())
)


@pytest.fixture(scope="module")
def fleet_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pf-swarm2-tests-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pb_engine(fleet_root: Path) -> PocketBaseEngine:
    engine = PocketBaseEngine(fleet_root / "engines", DEFAULT_POCKETBASE_VERSION)
    assert engine.ensure_bundled()
    return engine


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[PrivateDockerd, str, PrivateDockerd, str, NetworkNamespace]]:
    netns = NetworkNamespace()
    try:
        with PrivateDockerd() as manager, PrivateDockerd(netns=netns) as worker:
            manager_id = manager.init_swarm(netns.host_address)
            worker_id = worker.join_swarm(manager)
            yield manager, manager_id, worker, worker_id, netns
    finally:
        netns.close()


@pytest.fixture
def two_node_settings(driver_settings: Settings, nodes: tuple[Any, ...]) -> Settings:
    engines = {nodes[3]: nodes[2].host}  # the worker's engine, for images only
    update = {"driver": "swarm", "docker_host": nodes[0].host, "swarm_node_engines": engines}
    return driver_settings.model_copy(update=update)


@pytest.fixture
async def driver(two_node_settings: Settings) -> AsyncIterator[SwarmDriver]:
    made = SwarmDriver(two_node_settings)
    yield made
    await made.aclose()


async def test_placement_and_an_instance_on_the_other_node(
    driver: SwarmDriver, make_spec: SpecFactory, nodes: tuple[Any, ...]
) -> None:
    manager, manager_id, worker, worker_id, netns = nodes
    first, second = make_spec(), make_spec()
    tag = await asyncio.to_thread(driver.images().ensure, first.engine, first.version)
    boss, other = manager.client(), worker.client()
    try:
        image = boss.inspect_image(tag)["Id"]
        with pytest.raises(docker.errors.ImageNotFound):
            other.inspect_image(image)

        await driver.start(first)
        await driver.start(second)  # the first one's memory is committed: the other node
        placed = {
            spec.id: boss.inspect_service(container_name(spec))["Spec"]["Labels"][LABEL_NODE]
            for spec in (first, second)
        }
        assert set(placed.values()) == {manager_id, worker_id}
        remote = first if placed[first.id] == worker_id else second
        tasks = [
            task
            for task in boss.tasks(filters={"service": container_name(remote)})
            if task["Status"]["State"] == "running"
        ]
        assert [task["NodeID"] for task in tasks] == [worker_id]
        assert other.inspect_image(image)["Id"] == image  # loaded there by the driver
        assert driver.node_of(remote.id) == worker_id
        assert driver.address(remote.id) == netns.address  # where the proxy dials it
        assert driver.address("not-seen", worker_id) == netns.address

        base = f"http://{netns.address}:{remote.port}"
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            assert (await client.get("/api/health")).status_code == 200  # at the node's address
        observed = await driver.status(remote, None)
        assert (observed.state, observed.healthy) == (RunState.RUNNING, True)

        await driver.stop(remote, None)  # scaled to 0; Swarm's agent stops it on the worker
        assert (await driver.status(remote, None)).state is RunState.STOPPED
        await driver.start(remote)  # woken on the same node, with its data
        assert (remote.layout.data_dir / "data.db").is_file()
        assert (await driver.status(remote, None)).healthy
        restarted = SwarmDriver(driver.settings)  # a new control plane adopts it there
        try:
            adopted = await restarted.status(remote, None)
            assert (adopted.state, adopted.healthy) == (RunState.RUNNING, True)
        finally:
            await restarted.aclose()
        for spec in (first, second):
            await driver.remove(spec, keep_at=None)
    finally:
        boss.close()
        other.close()


def test_serve_on_two_nodes(nodes: tuple[Any, ...]) -> None:
    """`pocketfleet serve` on the two-node swarm: an instance placed on the worker (whose engine
    gets its image from the driver) is used through the embedded proxy, which dials it at the
    worker's address; its node is recorded on the instance. Moves (API and CLI) with its data
    kept, refusals, and a drain of the worker that moves all its instances to the manager."""
    manager, manager_id, worker, worker_id, _netns = nodes
    env = {
        "PF_DRIVER": "swarm",
        "PF_DOCKER_HOST": manager.host,
        "PF_IDLE_TIMEOUT_S": "0",
        "PF_SWARM_NODE": worker_id,  # new instances go to the worker
        "PF_SWARM_NODE_ENGINES": json.dumps({worker_id: worker.host}),
    }
    with running_server(env=env) as server, server.client() as api:
        api.headers["Authorization"] = f"Bearer {sign_up(api, 'two-nodes@example.com')}"
        body = {"name": "remote", "superuser_password": PASSWORD}
        assert api.post("/api/instances", json=body).status_code == 201
        started = api.post("/api/instances/remote/start").json()
        assert started["status"] == "running", started
        with server.instance_client("remote") as pb:
            token = superuser_token(pb, "two-nodes@example.com")
            pb.headers["Authorization"] = token
            notes = {"name": "notes", "type": "base", "fields": [{"name": "t", "type": "text"}]}
            assert pb.post("/api/collections", json=notes).status_code == 200
            assert pb.post("/api/collections/notes/records", json={"t": "kept"}).is_success
            listed = pb.get("/api/collections/notes/records").json()["items"]
            assert [item["t"] for item in listed] == ["kept"]
        assert recorded_node(server, started["id"]) == worker_id
        assert running_on(manager, started["id"]) == [worker_id]
        server.stop()  # a restarted control plane publishes the route at the worker again
        server.start()
        with server.instance_client("remote") as pb:
            pb.headers["Authorization"] = token
            after = answered(pb, "/api/collections/notes/records")
            assert [item["t"] for item in after.json()["items"]] == ["kept"]

        operator = operator_client(server, api)
        check_move_refusals(server, api, operator, worker_id)
        moved = operator.post("/api/instances/remote/move", json={"node": manager_id})
        assert moved.status_code == 200, moved.text
        assert moved.json()["node"] == manager_id and moved.json()["downtime_ms"] > 0
        print(f"move of a small instance, worker -> manager: {moved.json()['downtime_ms']:.0f} ms")
        assert recorded_node(server, started["id"]) == manager_id
        assert running_on(manager, started["id"]) == [manager_id]
        with server.instance_client("remote") as pb:  # its data, now on the manager's node
            pb.headers["Authorization"] = token
            listed = pb.get("/api/collections/notes/records").json()["items"]
            assert [item["t"] for item in listed] == ["kept"]
            assert pb.post("/api/collections/notes/records", json={"t": "after"}).is_success

        env = {**server.env(), "PF_URL": server.url, "PF_TOKEN": operator_token(operator)}
        back = subprocess.run(
            [str(BIN / "pocketfleet"), "instances", "move", "remote", "--node", worker_id],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert back.returncode == 0, back.stderr
        assert f"on node {worker_id}" in back.stdout
        assert running_on(manager, started["id"]) == [worker_id]

        body = {"name": "second", "superuser_password": PASSWORD}  # also on the worker
        assert api.post("/api/instances", json=body).status_code == 201
        second = api.post("/api/instances/second/start").json()
        assert running_on(manager, second["id"]) == [worker_id]
        drained = subprocess.run(
            [str(BIN / "pocketfleet"), "nodes", "drain", worker_id],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert drained.returncode == 0, drained.stderr
        assert f"node {worker_id} drained (2 instances moved)" in drained.stdout
        for instance_id in (started["id"], second["id"]):
            assert running_on(manager, instance_id) == [manager_id]
            assert recorded_node(server, instance_id) == manager_id
        with server.instance_client("remote") as pb:
            pb.headers["Authorization"] = token
            listed = pb.get("/api/collections/notes/records").json()["items"]
            assert [item["t"] for item in listed] == ["kept", "after"]
        nodes_now = {node["id"]: node for node in operator.get("/api/nodes").json()}
        assert nodes_now[worker_id]["drained"] and not nodes_now[manager_id]["drained"]
        assert nodes_now[worker_id]["instances_running"] == 0
        refused = operator.post("/api/instances/second/move", json={"node": worker_id})
        assert refused.status_code == 409 and "drained" in refused.json()["detail"]
        operator.close()


def operator_client(server: ServeProcess, tenant: httpx.Client) -> httpx.Client:
    with server.client() as anonymous:
        token = sign_up(anonymous, "two-nodes-operator@example.com")
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", "two-nodes-operator@example.com"],
        env=server.env(), check=True, capture_output=True,
    )  # fmt: skip
    return server.client(token)


def operator_token(operator: httpx.Client) -> str:
    return operator.headers["Authorization"].removeprefix("Bearer ")


def check_move_refusals(
    server: ServeProcess, tenant: httpx.Client, operator: httpx.Client, worker_id: str
) -> None:
    """401 without credentials, 403 for a tenant (its own instance too), 404 for no such
    instance, 422 for no such node, 409 for the node it is on."""
    move = "/api/instances/remote/move"
    with server.client() as anonymous:
        assert anonymous.post(move, json={"node": worker_id}).status_code == 401
    assert tenant.post(move, json={"node": worker_id}).status_code == 403
    missing = operator.post("/api/instances/nothing/move", json={"node": worker_id})
    assert missing.status_code == 404
    unknown = operator.post(move, json={"node": "no-such-node"})
    assert unknown.status_code == 422 and "no-such-node" in unknown.json()["detail"]
    same = operator.post(move, json={"node": worker_id})
    assert same.status_code == 409 and "already" in same.json()["detail"]
    assert operator.post("/api/nodes/no-such-node/drain").status_code == 422


def running_on(manager: PrivateDockerd, instance_id: str) -> list[str]:
    """The nodes a task of the instance's service runs on."""
    with contextlib.closing(manager.client()) as client:
        boss: Any = client
        (service,) = boss.services(filters={"label": f"{LABEL_INSTANCE}={instance_id}"})
        return [
            task["NodeID"]
            for task in boss.tasks(filters={"service": service["ID"]})
            if task["Status"]["State"] == "running"
        ]


def answered(pb: httpx.Client, path: str) -> httpx.Response:
    """The first 200 to GET `path` within 10 s: a restarted control plane publishes its routes
    just after it answers, and those to other nodes once the manager said where they are."""
    deadline = time.monotonic() + 10
    while True:
        response = pb.get(path)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response
        time.sleep(0.05)


def superuser_token(pb: httpx.Client, email: str) -> str:
    auth = pb.post(
        "/api/collections/_superusers/auth-with-password",
        json={"identity": email, "password": PASSWORD},
    )
    assert auth.status_code == 200, auth.text
    token: str = auth.json()["token"]
    return token


def recorded_node(server: ServeProcess, instance_id: str) -> str:
    with contextlib.closing(sqlite3.connect(server.data_dir / "control.db")) as db:
        (node,) = db.execute("SELECT node FROM instance WHERE id = ?", (instance_id,)).fetchone()
    return str(node)
