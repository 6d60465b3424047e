"""An instance that restores one of its own backups (`/api/backups/{key}/restore`, PocketBase's
and our engine's, which swap the data folder's files under the running replication): the
instance moves to a new replica generation, what it holds afterwards is replicated, and a
point-in-time restore from the control plane brings it back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.control_plane.backups.conftest import PASSWORD, Notes, Tenant, now, unique
from tests.support.server import ServeProcess, running_server


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    with running_server() as server:
        yield server


def wait_titles(notes: Notes, titles: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = notes.titles()
        except AssertionError:
            found = set()
        if found == titles:
            return
        assert time.monotonic() < deadline, f"{notes.name}: {found}, not {titles}"
        time.sleep(0.2)


def generation(tenant: Tenant, name: str) -> int:
    found: int = tenant.backups(name)["replica_generation"]
    return found


@pytest.mark.parametrize("engine", ["pocketbase", "pocketfleet"])
def test_writes_after_an_in_instance_restore_are_replicated(tenant: Tenant, engine: str) -> None:
    name = unique(f"selfrestore{engine[6:]}")
    body = {"name": name, "superuser_password": PASSWORD, "engine": engine}
    created = tenant.api.post("/api/instances", json=body)
    assert created.status_code == 201, created.text
    tenant.wait_status(name, "running")
    notes = Notes(tenant.serve, name, tenant.email).setup()
    notes.add("a")
    made = notes.request("POST", "/api/backups", json={"name": "with_a.zip"})
    assert made.status_code == 204, made.text
    notes.add("b")
    tenant.wait_replicated(notes.name, now())

    restored = notes.request("POST", "/api/backups/with_a.zip/restore")
    assert restored.status_code == 204, restored.text
    wait_titles(notes, {"a"})
    deadline = time.monotonic() + 60  # the backups loop notices the swap within ~10 s
    while generation(tenant, notes.name) == 0:
        assert time.monotonic() < deadline, "the swapped database kept its replica generation"
        time.sleep(0.2)
    tenant.wait_replicated(notes.name, now())  # the new generation has begun in the store
    notes.add("c")
    with_c = tenant.wait_replicated(notes.name, now())  # the window's end, c shipped by then

    done = tenant.restore_to(notes.name, with_c)
    assert done["status"] == "done", done
    wait_titles(notes, {"a", "c"})
