"""Replication paused while an instance does not run (`control_plane.backups.pauses`), against
a real `pocketfleet serve` and its real Litestream, asked through Litestream's control socket.

- a hibernated instance's databases are no longer monitored by Litestream, and what it wrote
  before it slept is in the replica (the pause's last sync);
- woken by a request, its databases are replicated again, and what it writes then reaches the
  replica;
- when Litestream is restarted (another instance's first start changes its list), it monitors
  every database again, and the sleeping instance's are paused again by the next pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.control_plane.backups.conftest import Tenant, now, unique
from tests.support.server import ServeProcess, running_server


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    with running_server(env={"PF_FIRST_ACCOUNT_IS_OPERATOR": "true"}) as server:
        yield server


def litestream_says(serve: ServeProcess) -> tuple[int, dict[str, str]]:
    """Litestream's pid and what its `/list` says of each database it lists."""
    folder = serve.data_dir / "litestream"
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
            pid, listed = litestream_says(serve)
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            pid, listed = 0, {}  # (re)starting
        if listed.get(path) == status:
            return pid
        assert time.monotonic() < deadline, f"{path} is {listed.get(path)}, not {status}"
        time.sleep(0.1)


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
    sleeper = unique("sleeper")
    tenant.create(sleeper).setup()
    path = data_db(serve, tenant, sleeper)
    wait_listed(serve, path, "replicating")
    hibernate(tenant, sleeper)
    first = wait_listed(serve, path, "stopped")

    tenant.create(unique("newcomer"))  # its first start restarts Litestream with it listed
    deadline = time.monotonic() + 60
    while True:
        try:
            if litestream_says(serve)[0] != first:
                break
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            break  # being restarted
        assert time.monotonic() < deadline, "litestream was not restarted"
        time.sleep(0.1)
    assert wait_listed(serve, path, "stopped") != first
