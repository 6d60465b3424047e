"""Fixtures of the hostile-tenant suite: one `pocketfleet serve` for the whole folder (as root,
every instance in its sandbox as its own uid, the real PocketBase), an attacker's instance with
the attack hook loaded, and a victim's instance with a secret record and a secret variable.

The control plane runs with secrets of its own in its environment (`CONTROL_PLANE_SECRETS`):
S3 credentials, which no instance process may ever see.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from control_plane.drivers import sandbox
from tests.security.hostile import CONTROL_PLANE_SECRETS, Hostile, Tenant, Victim
from tests.support.server import ServeProcess, running_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The suite proves the sandbox: it needs root, bwrap and setpriv (as deployments have)."""
    missing = sandbox.available()
    if missing is None:
        return
    skip = pytest.mark.skip(reason=f"no instance sandbox here: {missing}")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(skip)


@pytest.fixture(scope="package")
def serve() -> Iterator[ServeProcess]:
    env = {
        "PF_IDLE_TIMEOUT_S": "0",  # nothing sleeps unless a test puts it to sleep
        "PF_HIBERNATE_DRAIN_S": "1",
        "PF_MAX_CRASH_RESTARTS": "20",
        **CONTROL_PLANE_SECRETS,
    }
    with running_server(env=env) as server:
        yield server


@pytest.fixture(scope="package")
def attacker_tenant(serve: ServeProcess) -> Iterator[Tenant]:
    tenant = Tenant(serve, "attacker")
    yield tenant
    tenant.api.close()


@pytest.fixture(scope="package")
def victim_tenant(serve: ServeProcess) -> Iterator[Tenant]:
    tenant = Tenant(serve, "victim")
    yield tenant
    tenant.api.close()


@pytest.fixture(scope="package")
def victim(victim_tenant: Tenant) -> Victim:
    """Another tenant's running instance, with secrets in its database and its environment."""
    return Victim.create(victim_tenant, "vault")


@pytest.fixture(scope="package")
def hostile(attacker_tenant: Tenant, victim: Victim) -> Hostile:
    """The attacker's instance, running the attack hook (created after the victim's)."""
    return Hostile.create(attacker_tenant, "evil")
