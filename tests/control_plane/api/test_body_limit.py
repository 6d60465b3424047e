"""The body limit and the body read timeout of the apex (API and dashboard), against a real
server with a small limit (`PF_MAX_BODY_BYTES=4096`) and a short timeout."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from control_plane.settings import Settings
from tests.support.raw_http import chunk, exchange, request_head
from tests.support.server import ServeProcess, running_server

LIMIT = 4096


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    env = {"PF_MAX_BODY_BYTES": str(LIMIT), "PF_BODY_READ_TIMEOUT_S": "1"}
    with running_server(env=env) as server:
        yield server


def host(server: ServeProcess) -> str:
    return f"127.0.0.1:{server.port}"


def test_the_default_limit_is_one_mebibyte() -> None:
    assert Settings.model_fields["max_body_bytes"].default == 1024 * 1024


@pytest.mark.parametrize("path", ["/api/accounts", "/api/sessions", "/login", "/api/nowhere"])
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    server: ServeProcess, path: str
) -> None:
    head = request_head(
        "POST", path, host(server), "Content-Type: application/json", "Content-Length: 10485760"
    )
    response = exchange(server.port, head, wait_for_close=True)  # not one byte of the body
    assert response.status == 413
    assert response.json()["code"] == "too_large"
    assert str(LIMIT) in response.json()["detail"]
    assert response.headers["connection"] == "close"
    assert response.closed


def test_a_chunked_body_is_cut_off_at_the_limit(server: ServeProcess) -> None:
    head = request_head(
        "POST",
        "/api/accounts",
        host(server),
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    )
    pieces = [chunk(b" " * 1024) for _ in range(LIMIT // 1024 + 1)]  # one more than allowed
    response = exchange(server.port, head, *pieces, wait_for_close=True)  # never finished
    assert response.status == 413
    assert response.json()["code"] == "too_large"
    assert response.closed


def test_bodies_within_the_limit_pass_declared_or_chunked(server: ServeProcess) -> None:
    body = json.dumps({"email": "limit@example.com", "password": "correct-horse-battery"})
    with server.client() as api:
        json_type = {"Content-Type": "application/json"}
        declared = api.post("/api/accounts", content=body.encode(), headers=json_type)
        assert declared.status_code == 201, declared.text
        chunked = api.post(  # an iterator is sent chunked, without a length
            "/api/sessions",
            content=iter([body[:10].encode(), body[10:].encode()]),
            headers=json_type,
        )
        assert chunked.status_code == 200, chunked.text
        padded = api.post(  # a JSON body just under the limit
            "/api/sessions",
            content=(body + " " * (LIMIT - len(body))).encode(),
            headers=json_type,
        )
        assert padded.status_code == 200, padded.text


def test_a_stalled_body_is_refused_with_408(server: ServeProcess) -> None:
    head = request_head(
        "POST",
        "/api/accounts",
        host(server),
        "Content-Type: application/json",
        "Content-Length: 100",
    )
    response = exchange(server.port, head, b'{"email": ', wait_for_close=True)  # then nothing
    assert response.status == 408
    assert response.json()["code"] == "timeout"
    assert response.closed


def test_instance_hosts_are_not_limited(server: ServeProcess) -> None:
    # instance traffic goes to the embedded proxy, never through the apex's limit
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
        response = client.post(
            "/api/files",
            headers={"Host": f"nothing-here.localhost:{server.port}"},
            content=b"x" * (LIMIT * 4),
        )
    assert response.status_code == 404
    assert "No instance is served at nothing-here.localhost" in response.text
