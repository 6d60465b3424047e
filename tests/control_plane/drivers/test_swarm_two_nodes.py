"""The `swarm` driver on two nodes: a manager (a private dockerd on the host, advertised on a
veth address) and a worker (a second dockerd in a network namespace of its own, joined as a
worker); both labelled for pocketfleet. New instances are placed by free memory (the second
goes to the other node), an instance on the worker listens on the worker's address and is
dialled there, stops and wakes there with its data (the folder is on the one file system both
engines share, as a node's local disk would be). The worker gets the image with `docker save`
and `docker load` (no registry), as the node agent of issue 18 will."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.drivers.base import RunState
from control_plane.drivers.docker import container_name
from control_plane.drivers.swarm import LABEL_NODE, SwarmDriver
from control_plane.engines.pocketbase import PocketBaseEngine
from control_plane.settings import DEFAULT_POCKETBASE_VERSION, Settings
from tests.control_plane.conftest import SpecFactory
from tests.support.dockerd import NetworkNamespace, PrivateDockerd, unavailable

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
    return driver_settings.model_copy(update={"driver": "swarm", "docker_host": nodes[0].host})


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
        await asyncio.to_thread(lambda: other.load_image(b"".join(boss.get_image(tag))))

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
