"""The point-in-time window that `GET /api/instances/NAME/backups` advertises is the window
Litestream restores: through the real API (`pocketfleet serve`, real PocketBase instances,
Litestream, moto's S3 server on loopback, which lists objects in whole seconds), a restore to
exactly `restorable_from` or `restorable_to` succeeds, and a moment before the window is refused
with a 422 that says the window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from tests.control_plane.backups.conftest import Tenant, now, unique
from tests.support.s3 import FaultyLine, MotoServer, s3_env
from tests.support.server import ServeProcess, running_server

BUCKET = "pf-backups-window"
MS = timedelta(milliseconds=1)


@pytest.fixture(scope="module")
def serve(moto: MotoServer, line: FaultyLine) -> Iterator[ServeProcess]:
    moto.create_bucket(BUCKET)
    env = s3_env(moto.port, BUCKET)
    env.update(PF_FIRST_ACCOUNT_IS_OPERATOR="true")
    with running_server(env=env) as server:
        yield server


def window(tenant: Tenant, name: str) -> tuple[datetime, datetime]:
    body = tenant.backups(name)
    assert body["restorable_from"] and body["restorable_to"], body
    start = datetime.fromisoformat(body["restorable_from"])
    end = datetime.fromisoformat(body["restorable_to"])
    assert start <= end
    return start, end


def test_a_restore_to_either_end_of_the_advertised_window_succeeds(tenant: Tenant) -> None:
    notes = tenant.create(unique("edge")).setup()
    notes.add("first")
    tenant.wait_replicated(notes.name, now())
    start, _ = window(tenant, notes.name)

    done = tenant.restore_to(notes.name, start)
    assert done["status"] == "done", done
    assert notes.titles() <= {"first"}  # the state of the replica's first files: no later write

    notes.add("second")
    tenant.wait_replicated(notes.name, now())
    _, end = window(tenant, notes.name)
    done = tenant.restore_to(notes.name, end)
    assert done["status"] == "done", done
    assert "second" in notes.titles()


def test_a_moment_before_the_window_is_refused_with_the_window(tenant: Tenant) -> None:
    notes = tenant.create(unique("early")).setup()
    notes.add("first")
    tenant.wait_replicated(notes.name, now())
    start, end = window(tenant, notes.name)

    # just before the window; and the start of its second (S3 lists whole seconds: the moment
    # a window read from the listing alone would start at, where Litestream has nothing yet)
    for at in {start - MS, start.replace(microsecond=0)} - {start}:
        refused = tenant.api.post(
            f"/api/instances/{notes.name}/restore", json={"at": at.isoformat()}
        )
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["field"] == "at", body
        assert start.isoformat() in body["detail"] and "point-in-time window" in body["detail"]
    assert tenant.instance(notes.name)["status"] == "running"
    assert notes.titles() == {"first"}
    assert window(tenant, notes.name)[0] == start
    assert end <= window(tenant, notes.name)[1]
