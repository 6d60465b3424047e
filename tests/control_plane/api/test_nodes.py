"""`GET /api/nodes` and `pocketfleet nodes` on the process driver: one node, this machine (the
swarm's nodes are in tests/control_plane/drivers/test_swarm_driver.py); operators only."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import BIN, ServeProcess, sign_up


@pytest.fixture(scope="module")
def operator_token(serve: ServeProcess) -> str:
    with serve.client() as api:
        token = sign_up(api, "nodes-operator@example.com")
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", "nodes-operator@example.com"],
        env=serve.env(), check=True, capture_output=True,
    )  # fmt: skip
    return token


@pytest.fixture
def operator(serve: ServeProcess, operator_token: str) -> Iterator[httpx.Client]:
    with serve.client(operator_token) as api:
        yield api


def test_nodes_are_for_operators_only(serve: ServeProcess) -> None:
    with serve.client() as anonymous:
        for path in ("/api/nodes", "/api/nodes/join-command"):
            assert anonymous.get(path).status_code == 401, path
        token = sign_up(anonymous, "nodes-tenant@example.com")
    with serve.client(token) as tenant:
        for path in ("/api/nodes", "/api/nodes/join-command"):
            refused = tenant.get(path)
            assert refused.status_code == 403, path
            assert refused.json()["code"] == "forbidden"


def test_one_node_this_machine_with_its_instances(
    serve: ServeProcess, operator: httpx.Client
) -> None:
    (before,) = operator.get("/api/nodes").json()
    assert before["name"] == socket.gethostname() and before["role"] == "local"
    assert before["state"] == "ready" and before["availability"] == "active"
    assert 0 < before["memory_free_bytes"] <= before["memory_bytes"]
    assert 0 < before["disk_free_bytes"] <= before["disk_bytes"]

    assert operator.post("/api/instances", json={"name": "noded"}).status_code == 201
    assert operator.post("/api/instances/noded/start").json()["status"] == "running"
    (running,) = operator.get("/api/nodes").json()
    assert running["instances_running"] == before["instances_running"] + 1
    assert operator.post("/api/instances/noded/hibernate").json()["status"] == "hibernated"
    (asleep,) = operator.get("/api/nodes").json()
    assert asleep["instances_running"] == before["instances_running"]
    assert asleep["instances_asleep"] == before["instances_asleep"] + 1


def test_join_command_needs_the_swarm_driver(operator: httpx.Client) -> None:
    refused = operator.get("/api/nodes/join-command")
    assert refused.status_code == 409
    assert "PF_DRIVER=process" in refused.json()["detail"]


def test_the_cli_lists_the_node(serve: ServeProcess, operator_token: str) -> None:
    env = {**serve.env(), "PF_URL": serve.url, "PF_TOKEN": operator_token, "COLUMNS": "200"}
    listed = subprocess.run(
        [str(BIN / "pocketfleet"), "nodes", "ls"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert socket.gethostname() in listed.stdout and "ready" in listed.stdout
    joined = subprocess.run(
        [str(BIN / "pocketfleet"), "nodes", "join-command"], env=env, capture_output=True, text=True
    )
    assert joined.returncode == 1 and "PF_DRIVER=process" in joined.stderr


def test_moves_and_drains_are_for_operators_on_a_swarm(
    serve: ServeProcess, operator: httpx.Client
) -> None:
    """Move and drain: 401 without credentials, 403 for a tenant, 422 for a bad body, 409 on
    the process driver (one machine: nowhere to move to)."""
    move, drain = "/api/instances/noded/move", f"/api/nodes/{socket.gethostname()}/drain"
    with serve.client() as anonymous:
        assert anonymous.post(move, json={"node": "x"}).status_code == 401
        assert anonymous.post(drain).status_code == 401
        token = sign_up(anonymous, "moves-tenant@example.com")
    with serve.client(token) as tenant:
        assert tenant.post(move, json={"node": "x"}).status_code == 403
        assert tenant.post(drain).status_code == 403
    assert operator.post(move, json={}).status_code == 422
    assert operator.post(move, json={"node": ""}).status_code == 422
    refused = operator.post(move, json={"node": "x"})
    assert refused.status_code == 409 and "PF_DRIVER=process" in refused.json()["detail"]
    refused = operator.post(drain)
    assert refused.status_code == 409 and "PF_DRIVER=process" in refused.json()["detail"]
