"""The whole story with real processes: sign up, create, use the instance with the official JS
SDK through its subdomain, stop, start, restart the control plane, upgrade, delete."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx
import psutil
import pytest

from tests.support.node import run_sdk
from tests.support.server import BIN, ServeProcess, sign_up

OLD_VERSION = "0.28.4"
NEW_VERSION = "0.40.6"
EMAIL = "ada@example.com"
SUPERUSER_PASSWORD = "superuser-pass-1"


@pytest.fixture(scope="module")
def backend() -> str:
    # one control database: PostgreSQL's path (the same services and queries) is covered by the
    # API modules that run over both (test_instances, test_accounts, test_sessions, ...)
    return "sqlite"


def wait_for(api: httpx.Client, name: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row: dict[str, Any] = api.get(f"/api/instances/{name}").json()
        if row["status"] == status or time.monotonic() > deadline:
            assert row["status"] == status, row
            return row
        time.sleep(0.1)


def fleet_row(api: httpx.Client, name: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = api.get("/api/fleet").json()
    return next(row for row in rows if row["name"] == name)


def pid_alive(pid: int) -> bool:
    """Running, and not a zombie left to whoever adopted it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_life_of_an_instance(serve: ServeProcess) -> None:
    api = serve.client()
    api.headers["Authorization"] = f"Bearer {sign_up(api, EMAIL)}"
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", EMAIL],
        env=serve.env(), check=True, capture_output=True,
    )  # fmt: skip

    # an operator installs an older PocketBase from PyPI; the owner creates an instance on it
    installed = api.post("/api/engines", json={"engine": "pocketbase", "version": OLD_VERSION})
    assert installed.status_code == 201, installed.text
    assert OLD_VERSION in installed.json()["versions"]
    created = api.post(
        "/api/instances",
        json={"name": "shop", "version": OLD_VERSION, "superuser_password": SUPERUSER_PASSWORD},
    )
    assert created.status_code == 201, created.text
    wait_for(api, "shop", "running")
    url = serve.instance_url("shop")

    # the official SDK, through the embedded proxy at shop.localhost
    assert run_sdk("health", url)["code"] == 200
    crud = run_sdk("superuser-crud", url, EMAIL, SUPERUSER_PASSWORD)
    assert crud["filtered"]["titles"] == ["cobalt", "bravo"]
    assert crud["remaining"] == ["alpha2", "cobalt"]
    event = run_sdk("realtime", url, EMAIL, SUPERUSER_PASSWORD)
    assert event["action"] == "create"

    # stopped: the proxy answers 503; started again: the data is still there
    assert api.post("/api/instances/shop/stop").json()["status"] == "stopped"
    with serve.instance_client("shop") as instance:
        assert instance.get("/api/health").status_code == 503
    assert api.post("/api/instances/shop/start").json()["status"] == "running"
    assert run_sdk("list", url, EMAIL, SUPERUSER_PASSWORD, "notes")["titles"] == [
        "alpha2", "cobalt", "realtime",
    ]  # fmt: skip

    # restarting the control plane neither loses nor restarts the instance
    pid = fleet_row(api, "shop")["pid"]
    serve.stop()
    assert pid_alive(pid)
    serve.start()
    row = fleet_row(api, "shop")
    assert (row["status"], row["pid"]) == ("running", pid)
    assert run_sdk("health", url)["code"] == 200

    # upgrade: same data folder, new binary
    upgraded = api.patch("/api/instances/shop", json={"version": NEW_VERSION})
    assert upgraded.status_code == 200, upgraded.text
    assert (upgraded.json()["status"], upgraded.json()["version"]) == ("running", NEW_VERSION)
    new_pid = fleet_row(api, "shop")["pid"]
    assert new_pid != pid
    assert not pid_alive(pid)
    assert run_sdk("list", url, EMAIL, SUPERUSER_PASSWORD, "notes")["titles"] == [
        "alpha2", "cobalt", "realtime",
    ]  # fmt: skip

    # another tenant sees nothing of it
    other = serve.client()
    other.headers["Authorization"] = f"Bearer {sign_up(other, 'eve@example.com')}"
    assert other.get("/api/instances/shop").status_code == 404
    assert other.post("/api/instances/shop/stop").status_code == 404
    assert other.delete("/api/instances/shop").status_code == 404
    assert other.get("/api/instances").json() == []

    # deleted: gone from the proxy, the folder kept in the trash
    assert api.delete("/api/instances/shop").status_code == 204
    with serve.instance_client("shop") as instance:
        assert instance.get("/api/health").status_code == 404
    assert not pid_alive(new_pid)
    assert list((serve.data_dir / "trash").glob("*-shop"))
