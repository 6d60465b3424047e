"""Operators: the fleet view, suspending and resuming accounts, installing engine versions."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import BIN, ServeProcess, sign_up

_ids = itertools.count()


@pytest.fixture(scope="module")
def backend() -> str:
    # one control database: PostgreSQL's path (the same services and queries) is covered by the
    # API modules that run over both (test_instances, test_accounts, test_sessions, ...)
    return "sqlite"


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


def client_for(serve: ServeProcess, email: str) -> httpx.Client:
    api = serve.client()
    api.headers["Authorization"] = f"Bearer {sign_up(api, email)}"
    return api


@pytest.fixture(scope="module")
def operator(serve: ServeProcess) -> Iterator[httpx.Client]:
    email = f"{unique('op')}@example.com"
    api = client_for(serve, email)
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", email],
        env=serve.env(), check=True, capture_output=True,
    )  # fmt: skip
    yield api
    api.close()


@pytest.fixture
def tenant(serve: ServeProcess) -> Iterator[httpx.Client]:
    api = client_for(serve, f"{unique('tenant')}@example.com")
    yield api
    api.close()


def test_operator_add_refuses_an_unknown_email(serve: ServeProcess) -> None:
    result = subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", "ghost@example.com"],
        env=serve.env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no account" in result.stderr


def test_fleet_is_for_operators_only(tenant: httpx.Client) -> None:
    for method, path in [
        ("GET", "/api/fleet"),
        ("GET", "/api/accounts"),
        ("POST", "/api/accounts/whatever/suspend"),
        ("POST", "/api/accounts/whatever/resume"),
        ("POST", "/api/engines"),
        ("POST", "/api/invites"),
    ]:
        response = tenant.request(method, path, json={"engine": "pocketbase", "version": "1"})
        assert response.status_code == 403, (method, path)


def test_fleet_lists_every_instance_with_its_owner(
    operator: httpx.Client, tenant: httpx.Client
) -> None:
    name = unique("fleet")
    assert tenant.post("/api/instances", json={"name": name}).status_code == 201
    assert tenant.post(f"/api/instances/{name}/start").json()["status"] == "running"
    rows = {row["name"]: row for row in operator.get("/api/fleet").json()}
    me = tenant.get("/api/accounts/me").json()
    assert rows[name]["owner_email"] == me["email"]
    assert rows[name]["status"] == "running"
    assert rows[name]["pid"] > 0


def test_suspending_stops_instances_and_refuses_requests(
    serve: ServeProcess, operator: httpx.Client, tenant: httpx.Client
) -> None:
    name = unique("susp")
    tenant.post("/api/instances", json={"name": name})
    assert tenant.post(f"/api/instances/{name}/start").json()["status"] == "running"
    account_id = tenant.get("/api/accounts/me").json()["id"]

    suspended = operator.post(f"/api/accounts/{account_id}/suspend")
    assert suspended.status_code == 200
    assert suspended.json()["suspended"] is True
    assert tenant.get("/api/instances").status_code == 403
    assert _wait_status(operator, name, "stopped")
    with serve.instance_client(name) as instance:
        assert instance.get("/api/health").status_code == 503

    assert operator.post(f"/api/accounts/{account_id}/resume").json()["suspended"] is False
    assert _wait_status(operator, name, "running")
    assert tenant.get(f"/api/instances/{name}").json()["status"] == "running"


def test_suspending_an_unknown_account_is_404(operator: httpx.Client) -> None:
    assert operator.post("/api/accounts/nosuchaccount00/suspend").status_code == 404


def test_installing_an_unknown_version_is_400(operator: httpx.Client) -> None:
    response = operator.post("/api/engines", json={"engine": "pocketbase", "version": "0.0.999"})
    assert response.status_code == 400
    unknown = operator.post("/api/engines", json={"engine": "nosuch", "version": "1.0.0"})
    assert unknown.status_code == 404


def test_engines_lists_the_bundled_version(tenant: httpx.Client) -> None:
    engines = {row["name"]: row for row in tenant.get("/api/engines").json()}
    assert "0.40.6" in engines["pocketbase"]["versions"]


def _wait_status(api: httpx.Client, name: str, status: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = {row["name"]: row for row in api.get("/api/fleet").json()}
        if rows[name]["status"] == status:
            return True
        time.sleep(0.1)
    return False
