"""Paused replication across a restart of `pocketfleet serve` (`control_plane.backups.pauses`):
the new control plane adopts the running Litestream, which keeps the databases the one before
paused closed; it knows them as paused (their replication lag is 0 in the fleet overview, no
sync of them is tried again), and a wake resumes them, so that what the instance writes then
reaches the replica. Against a real `serve` and its real Litestream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.control_plane.backups.conftest import Tenant, now, unique
from tests.control_plane.backups.test_pauses import data_db, hibernate, wait_listed
from tests.support.server import ServeProcess, running_server


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    with running_server(env={"PF_FIRST_ACCOUNT_IS_OPERATOR": "true"}) as server:
        yield server


def lag_of(operator: Tenant, name: str) -> float | None:
    rows = {row["name"]: row for row in operator.api.get("/api/fleet/backups").json()}
    lag: float | None = rows[name]["replication_lag_s"]
    return lag


def test_a_database_paused_before_a_restart_is_resumed_by_a_wake_after_it(
    serve: ServeProcess, operator: Tenant, tenant: Tenant
) -> None:
    name = unique("adopted")
    notes = tenant.create(name).setup()
    path = data_db(serve, tenant, name)
    wait_listed(serve, path, "replicating")
    notes.add("written before it slept")
    hibernate(tenant, name)
    litestream = wait_listed(serve, path, "stopped")

    serve.stop()
    serve.start()
    assert wait_listed(serve, path, "stopped") == litestream  # adopted, still paused
    deadline = time.monotonic() + 60
    while lag_of(operator, name) != 0.0:  # known as paused once the first pass read Litestream
        assert time.monotonic() < deadline, f"lag {lag_of(operator, name)}: not known as paused"
        time.sleep(0.2)

    notes.add("written once woken")  # the request wakes it
    woken = now()
    assert wait_listed(serve, path, "replicating") == litestream
    tenant.wait_replicated(name, woken)
