"""The operators' Nodes page over HTTP (no browser) against a real `pocketfleet serve`: on the
process driver one row, this machine, with its capacity, its instance counts and placement;
the link in the operators' navigation only; refusals: a user gets 403 (and no link), no
login goes to the login page, a swarm manager that does not answer is a 503 page. A swarm
node that placement skips (drained, paused, down) and overcommitted memory: the row rendered
from `NodePublic` values, without a swarm."""

from __future__ import annotations

import html
import re
import socket
from collections.abc import Iterator

import httpx
import pytest

from control_plane.nodes.schemas import NodePublic
from dashboard.node_pages import NodeRow
from dashboard.web import templates
from tests.support.server import ServeProcess, running_server
from tests.support.web import WebPerson

NAME = "nodes-page-app"
GB = 1024**3


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with running_server(env={"PF_FIRST_ACCOUNT_IS_OPERATOR": "true"}) as server:
        yield server


@pytest.fixture(scope="module")
def operator(server: ServeProcess) -> Iterator[WebPerson]:
    person = WebPerson(server, "nodes-root@example.com")  # the first account: an operator
    yield person
    person.close()


@pytest.fixture(scope="module")
def user(server: ServeProcess, operator: WebPerson) -> Iterator[WebPerson]:
    person = WebPerson(server, "nodes-user@example.com")
    yield person
    person.close()


def node_row(page: httpx.Response, name: str) -> str:
    found = re.search(rf'<tr id="node-[^"]*">\s*<th scope="row">{re.escape(name)}</th>(.*?)</tr>',
                      page.text, re.S)  # fmt: skip
    assert found, page.text
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))))


def test_the_operator_sees_this_machine_as_the_one_node(operator: WebPerson) -> None:
    page = operator.page("/nodes")
    assert page.text.count('<tr id="node-') == 1
    row = node_row(page, socket.gethostname())
    assert "127.0.0.1" in row and "local" in row
    assert "ready active" in row
    assert re.search(r"\d+(\.\d)? [KMG]?B free of \d+(\.\d)? [KMG]?B", row), row  # memory, disk
    assert "0 running, 0 asleep" in row
    assert "used for new instances" in row
    assert "driver process" in page.text
    assert '<a href="/nodes" aria-current="page">Nodes</a>' in page.text


def test_instance_counts_follow_the_instances(operator: WebPerson) -> None:
    api = operator.api
    assert api.post("/api/instances", json={"name": NAME}).status_code == 201
    assert api.post(f"/api/instances/{NAME}/start").json()["status"] == "running"
    assert "1 running, 0 asleep" in node_row(operator.page("/nodes"), socket.gethostname())
    assert api.post(f"/api/instances/{NAME}/hibernate").json()["status"] == "hibernated"
    assert "0 running, 1 asleep" in node_row(operator.page("/nodes"), socket.gethostname())


def test_a_user_is_refused_and_sees_no_link(user: WebPerson) -> None:
    refused = user.page("/nodes", 403)
    assert "only operators may see this page" in refused.text
    assert 'id="nodes"' not in refused.text
    assert 'href="/nodes"' not in user.page("/instances").text


def test_without_a_login_the_page_asks_for_one(server: ServeProcess) -> None:
    with server.client() as anonymous:
        answer = anonymous.get("/nodes")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/nodes"


@pytest.fixture(scope="module")
def swarm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A control plane on the swarm driver whose manager's socket does not exist."""
    missing = tmp_path_factory.mktemp("no-manager") / "docker.sock"
    env = {
        "PF_DRIVER": "swarm",
        "PF_DOCKER_HOST": f"unix://{missing}",
        "PF_FIRST_ACCOUNT_IS_OPERATOR": "true",
    }
    with running_server(env=env) as server:
        yield server


def test_a_manager_that_does_not_answer_is_a_503_page(swarm_server: ServeProcess) -> None:
    person = WebPerson(swarm_server, "swarm-root@example.com")
    try:
        page = person.page("/nodes", 503)
    finally:
        person.close()
    error = re.search(r'<p class="error" id="nodes-error" role="alert">([^<]*)</p>', page.text)
    assert error, page.text
    assert re.search("does not answer|refused", html.unescape(error.group(1))), error.group(1)
    assert "No node to show." in page.text and "driver swarm" in page.text


def swarm_node(**fields: object) -> NodePublic:
    values: dict[str, object] = {
        "id": "n1", "name": "edge-1", "address": "10.0.0.2", "role": "worker",
        "state": "ready", "availability": "active", "memory_bytes": 4 * GB,
        "memory_free_bytes": 3 * GB, "instances_running": 2, "instances_asleep": 1,
    }  # fmt: skip
    return NodePublic.model_validate({**values, **fields})


@pytest.mark.parametrize(
    ("fields", "placeable"),
    [
        ({}, True),
        ({"availability": "drain"}, False),
        ({"availability": "pause"}, False),
        ({"state": "down"}, False),
    ],
)
def test_placement_uses_ready_active_nodes_only(fields: dict[str, str], placeable: bool) -> None:
    assert NodeRow(swarm_node(**fields)).placeable is placeable


def test_a_drained_overcommitted_swarm_node_as_shown() -> None:
    node = swarm_node(availability="drain", memory_free_bytes=-GB)
    page = templates.get_template("nodes.html").render(
        viewer=None, csrf="", csrf_field="csrf_token", notice=None, path="/nodes",
        rows=[NodeRow(node)], driver="swarm", error="",
    )  # fmt: skip
    row = node_row(httpx.Response(200, text=page), "edge-1")
    assert "10.0.0.2 worker ready drain" in row
    assert "overcommitted by 1.0 GB of 4.0 GB" in row
    assert "– 2 running, 1 asleep not used (ready, drain)" in row  # disk unknown off the manager
    assert "pocketfleet nodes join-command" in page
