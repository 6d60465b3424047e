"""Replication paused while an instance does not run (`control_plane.backups.pauses`), against
a real `pocketfleet serve` and its real Litestream, asked through Litestream's control socket.

- a hibernated instance's databases are no longer monitored by Litestream, and what it wrote
  before it slept is in the replica (the pause's last sync);
- woken by a request, its databases are replicated again, and what it writes then reaches the
  replica (the wake resumes them once it answered: the write came first);
- a wake that fails (its engine does not start) resumes nothing: the databases stay paused;
- when its Litestream is restarted (it died, or another instance of its shard changed the
  list), it monitors every database again, and the sleeping instance's are paused again by the
  next pass;
- an instance's first start restarts the Litestream of its own shard only: the others keep
  their processes (and their paused databases).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from control_plane.backups.replication import shard_of
from tests.control_plane.backups.conftest import Tenant, now, unique
from tests.support.server import ServeProcess, running_server


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    # every shard its own Litestream whatever the fleet's size (one test watches two of them)
    env = {"PF_FIRST_ACCOUNT_IS_OPERATOR": "true", "PF_REPLICATION_INSTANCES_PER_PROCESS": "0"}
    with running_server(env=env) as server:
        yield server


def shard_folder(serve: ServeProcess, path: str) -> Path:
    """The folder of the Litestream shard whose configuration lists the database `path`."""
    for config in (serve.data_dir / "litestream").glob("shard-*/litestream.json"):
        if path in {db["path"] for db in json.loads(config.read_text())["dbs"]}:
            return config.parent
    raise KeyError(path)


def shard_pids(serve: ServeProcess) -> dict[str, int]:
    """Shard folder name -> the pid its Litestream recorded."""
    found = {}
    for pid_file in (serve.data_dir / "litestream").glob("shard-*/litestream.pid"):
        found[pid_file.parent.name] = int(json.loads(pid_file.read_text())["pid"])
    return found


def litestream_says(serve: ServeProcess, path: str) -> tuple[int, dict[str, str]]:
    """The pid of the Litestream that lists the database `path`, and what its `/list` says of
    each database it lists."""
    folder = shard_folder(serve, path)
    config = json.loads((folder / "litestream.json").read_text())
    pid = int(json.loads((folder / "litestream.pid").read_text())["pid"])
    transport = httpx.HTTPTransport(uds=config["socket"]["path"])
    with httpx.Client(transport=transport, base_url="http://litestream", timeout=30) as client:
        listed = client.get("/list").json()["databases"]
    return pid, {item["path"]: item["status"] for item in listed}


def data_db(serve: ServeProcess, tenant: Tenant, name: str) -> str:
    instance_id = tenant.instance(name)["id"]
    return str((serve.data_dir / "instances" / instance_id / "pb_data" / "data.db").resolve())


def wait_listed(serve: ServeProcess, path: str, status: str, timeout: float = 60) -> int:
    """Until Litestream lists `path` with `status`; its pid then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, listed = litestream_says(serve, path)
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            pid, listed = 0, {}  # (re)starting
        if listed.get(path) == status:
            return pid
        assert time.monotonic() < deadline, f"{path} is {listed.get(path)}, not {status}"
        time.sleep(0.1)


def asleep(serve: ServeProcess, tenant: Tenant, prefix: str) -> tuple[str, str, int]:
    """A new instance, replicated, then hibernated with its database paused: its name, its
    data.db and the pid of the Litestream that lists it stopped."""
    name = unique(prefix)
    tenant.create(name).setup()
    path = data_db(serve, tenant, name)
    wait_listed(serve, path, "replicating")
    hibernate(tenant, name)
    return name, path, wait_listed(serve, path, "stopped")


def hibernate(tenant: Tenant, name: str) -> None:
    answer = tenant.api.post(f"/api/instances/{name}/hibernate")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "hibernated", answer.text


def test_a_sleeping_instance_is_paused_after_a_last_sync_and_resumed_when_woken(
    serve: ServeProcess, tenant: Tenant
) -> None:
    name = unique("pause")
    notes = tenant.create(name).setup()
    path = data_db(serve, tenant, name)
    wait_listed(serve, path, "replicating")
    notes.add("written before it slept")
    before_sleep = now()
    hibernate(tenant, name)

    wait_listed(serve, path, "stopped")
    tenant.wait_replicated(name, before_sleep)  # the last sync shipped it

    notes.add("written once woken")  # the request wakes it
    woken = now()
    wait_listed(serve, path, "replicating")
    tenant.wait_replicated(name, woken)


def test_a_restarted_litestream_has_sleeping_databases_paused_again(
    serve: ServeProcess, tenant: Tenant
) -> None:
    _, path, first = asleep(serve, tenant, "sleeper")

    os.kill(first, signal.SIGTERM)  # the supervisor's next pass starts it again
    assert wait_listed(serve, path, "stopped") != first


def test_a_first_start_restarts_the_litestream_of_its_own_shard_only(
    serve: ServeProcess, tenant: Tenant
) -> None:
    _, path, _ = asleep(serve, tenant, "asleep")
    before = shard_pids(serve)

    newcomer = unique("newcomer")
    tenant.create(newcomer)
    new_path = data_db(serve, tenant, newcomer)
    wait_listed(serve, new_path, "replicating")
    own = f"shard-{shard_of(tenant.instance(newcomer)['id']):02d}"
    assert shard_folder(serve, new_path).name == own
    after = shard_pids(serve)
    assert after[own] != before.get(own)
    assert {k: pid for k, pid in after.items() if k != own} == {
        k: pid for k, pid in before.items() if k != own
    }  # every other shard kept its process
    if shard_folder(serve, path).name != own:
        assert litestream_says(serve, path)[1][path] == "stopped"  # still paused


def test_a_failed_wake_leaves_the_replication_paused(serve: ServeProcess, tenant: Tenant) -> None:
    # (last in the module: its broken database is listed, paused, until it is deleted)
    name, path, _ = asleep(serve, tenant, "nowake")
    Path(path).write_bytes(b"this is not a database" * 512)  # the engine fails to start
    try:
        with serve.instance_client(name) as client:
            response = client.get("/api/health")
        assert response.status_code == 503, response.text
        assert tenant.instance(name)["status"] == "hibernated"
        # the wake resumes replication only once it answered: Litestream never reopens it
        assert litestream_says(serve, path)[1][path] == "stopped"
    finally:
        assert tenant.api.delete(f"/api/instances/{name}?purge=true").status_code == 204
