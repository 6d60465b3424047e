"""`pocketfleet serve` with a supervised Caddy child in front (`PF_PROXY=caddy`,
`PF_START_CADDY`): routing, HTTPS with Caddy's internal CA, the TLS `ask` endpoint, custom
domains, event streams, activity and hibernation behind Caddy, Caddy crashing, and Caddy's
admin API reachable on a root-only unix socket only (a TCP admin address is refused).

The tests of this module run in order on one server (SQLite), each leaving the state the next
one starts from (app1 and app2 exist; app1 ends up woken after a hibernation).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.caddy import admin_get, curl_admin_as, https_get, tcp_listen_ports
from tests.support.ports import free_port
from tests.support.server import BIN, ServeProcess, running_server, scratch_dir, sign_up

NOBODY = 65534

DOMAINS = {"www.shop.test": "127.0.0.1", "claimed.shop.test": "127.0.0.1"}


@dataclass
class Fleet:
    serve: ServeProcess
    owner: httpx.Client  # signed in as the owner of app1
    other: httpx.Client  # another account, owner of app2
    http_port: int
    https_port: int
    token: str

    @property
    def caddy_dir(self) -> Path:
        return self.serve.data_dir / "caddy"

    @property
    def admin_socket(self) -> Path:
        listen: str = json.loads((self.caddy_dir / "bootstrap.json").read_text())["admin"]["listen"]
        return Path(listen.removeprefix("unix/"))

    @property
    def caddy_pid(self) -> int:
        return int((self.caddy_dir / "caddy.pid").read_text())

    def via_caddy(self, host: str, path: str = "/api/health") -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.http_port}{path}",
            headers={"Host": host},
            timeout=30,
            trust_env=False,
        )

    def https(self, host: str, path: str = "/api/health") -> httpx.Response:
        ca = self.caddy_dir / "data" / "pki" / "authorities" / "local" / "root.crt"
        return https_get(self.https_port, host, path, ca)

    def ask(self, domain: str) -> int:
        return self.owner.get("/api/tls/ask", params={"domain": domain}).status_code

    def route(self, host: str) -> dict[str, object]:
        data: dict[str, object] = admin_get(
            self.admin_socket, f"/id/pocketfleet-host-{host}"
        ).json()
        return data

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PF_")}
        env.update(PF_URL=self.serve.url, PF_TOKEN=self.token)
        return subprocess.run(
            [str(BIN / "pocketfleet"), *args], env=env, capture_output=True, text=True, timeout=60
        )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Bounded wait for `condition()` (HTTP errors while something restarts count as false)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def running(client: httpx.Client, name: str) -> dict[str, object]:
    row: dict[str, object] = {}

    def is_running() -> bool:
        nonlocal row
        row = client.get(f"/api/instances/{name}").json()
        return row["status"] == "running"

    wait_for(is_running, timeout=90)
    return row


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    http_port, https_port = free_port(), free_port()
    env = {
        "PF_PROXY": "caddy",
        "PF_START_CADDY": "true",
        "PF_CADDY_HTTP": f"127.0.0.1:{http_port}",
        "PF_CADDY_HTTPS": f"127.0.0.1:{https_port}",
        "PF_CADDY_CHECK_INTERVAL_S": "0.2",
        "PF_CADDY_ACTIVITY_POLL_S": "0.2",
        "PF_SAMPLE_INTERVAL_S": "0.5",
        "PF_IDLE_SWEEP_INTERVAL_S": "0.5",
        "PF_DOMAIN_RESOLVE": json.dumps(DOMAINS),
        "PF_DOMAIN_HTTP_VERIFICATION": "true",  # off by default: DNS TXT only
    }
    with running_server(env=env) as serve:
        owner, other = serve.client(), serve.client()
        token = sign_up(owner, "owner@example.com")
        owner.headers["Authorization"] = f"Bearer {token}"
        other.headers["Authorization"] = f"Bearer {sign_up(other, 'other@example.com')}"
        assert owner.post("/api/instances", json={"name": "app1"}).status_code == 201
        assert other.post("/api/instances", json={"name": "app2"}).status_code == 201
        running(owner, "app1")
        running(other, "app2")
        try:
            yield Fleet(serve, owner, other, http_port, https_port, token)
        finally:
            owner.close()
            other.close()


def test_instances_are_served_through_caddy(fleet: Fleet) -> None:
    wait_for(lambda: fleet.via_caddy("app1.localhost").status_code == 200)
    assert fleet.via_caddy("app1.localhost").json()["message"] == "API is healthy."
    assert fleet.via_caddy("localhost").json()["message"] == "API is healthy."  # the apex
    assert fleet.owner.get("/api/instances/app1").json()["url"] == (
        f"http://app1.localhost:{fleet.http_port}"
    )


def assert_admin_on_a_root_only_socket(fleet: Fleet) -> None:
    """Caddy's admin API is on `PF_DATA_DIR/caddy/admin.sock` only: no TCP listener but
    Caddy's HTTP and HTTPS ports, nothing on :2019, and another uid cannot connect."""
    assert fleet.admin_socket == fleet.caddy_dir.resolve() / "admin.sock"
    assert fleet.caddy_dir.stat().st_mode & 0o777 == 0o700
    assert tcp_listen_ports(fleet.caddy_pid) == {fleet.http_port, fleet.https_port}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", 2019), timeout=1).close()
    admin = admin_get(fleet.admin_socket, "/config/admin").json()
    assert admin == {"listen": f"unix/{fleet.admin_socket}", "config": {"persist": False}}
    if os.geteuid() == 0:  # what a tenant's hook (its instance's uid) would get
        probe = curl_admin_as(fleet.admin_socket, NOBODY)
        assert probe.returncode == 7 and "Permission denied" in probe.stderr, probe.stderr


def test_caddy_admin_api_is_only_on_a_root_only_socket(fleet: Fleet) -> None:
    wait_for(lambda: fleet.via_caddy("app1.localhost").status_code == 200)  # pushed in full
    assert_admin_on_a_root_only_socket(fleet)
    instance_id = fleet.owner.get("/api/instances/app1").json()["id"]
    uid = (fleet.serve.data_dir / "instances" / instance_id).stat().st_uid
    if uid != 0:  # app1's own uid, which its hooks run as
        probe = curl_admin_as(fleet.admin_socket, uid)
        assert probe.returncode == 7 and "Permission denied" in probe.stderr, probe.stderr


def test_admin_sign_in_hand_offs_pass_through_caddy(fleet: Fleet) -> None:
    link = fleet.owner.post("/api/instances/app1/admin-link").json()["url"]
    assert link.startswith(f"http://app1.localhost:{fleet.http_port}/_pf/handoff?code=")
    page = fleet.via_caddy("app1.localhost", link.split(str(fleet.http_port), 1)[1])
    assert page.status_code == 200 and "localStorage" in page.text  # answered by pocketfleet


def test_an_unknown_host_gets_our_404(fleet: Fleet) -> None:
    response = fleet.via_caddy("nobody.localhost")
    assert response.status_code == 404
    assert response.json()["message"] == "No instance is served at nobody.localhost."


def test_logins_through_caddy_are_throttled_by_the_client_caddy_saw(fleet: Fleet) -> None:
    # loopback is the trusted proxy here (PF_PROXY=caddy); Caddy replaces what its client
    # claims in X-Forwarded-For by the address it was reached from, so forging does not help
    with fleet.serve.client() as api:
        sign_up(api, "guessed@example.com")

    def log_in(password: str, forged: str) -> int:
        return httpx.post(
            f"http://127.0.0.1:{fleet.http_port}/api/sessions",
            json={"email": "guessed@example.com", "password": password},
            headers={"Host": "localhost", "X-Forwarded-For": forged},
            timeout=30,
            trust_env=False,
        ).status_code

    codes = [log_in(f"guess-{n}", f"203.0.113.{n}") for n in range(6)]
    assert codes == [401] * 5 + [429]


def test_https_with_the_internal_ca(fleet: Fleet) -> None:
    response = fleet.https("app1.localhost")
    assert response.status_code == 200 and response.json()["message"] == "API is healthy."
    with pytest.raises(httpx.ConnectError):  # no certificate for a host nobody serves
        fleet.https("nobody.localhost")


@pytest.mark.parametrize(
    ("domain", "status"),
    [
        ("app1.localhost", 200),
        ("APP2.localhost", 200),
        ("localhost", 200),
        ("nobody.localhost", 404),
        ("app1.localhost.evil.example", 404),
        ("a.b.localhost", 404),
        ("example.com", 404),
        ("www.shop.test", 404),  # not claimed yet
    ],
)
def test_the_ask_endpoint_approves_only_served_hosts(
    fleet: Fleet, domain: str, status: int
) -> None:
    assert fleet.ask(domain) == status


def test_custom_domain_refusals(fleet: Fleet) -> None:
    add = "/api/instances/{}/domains"
    assert fleet.other.post(add.format("app1"), json={"domain": "x.shop.test"}).status_code == 404
    for bad in ("not a domain", "https://www.shop.test/", "shop.localhost", "localhost"):
        response = fleet.owner.post(add.format("app1"), json={"domain": bad})
        assert response.status_code == 422, (bad, response.text)
    claimed = fleet.other.post(add.format("app2"), json={"domain": "claimed.shop.test"})
    assert claimed.status_code == 201
    taken = fleet.owner.post(add.format("app1"), json={"domain": "claimed.shop.test"})
    assert taken.status_code == 409
    assert (
        fleet.owner.post(add.format("app1"), json={"domain": "nowhere.shop.test"}).status_code
        == 201
    )
    refused = fleet.owner.post("/api/instances/app1/domains/nowhere.shop.test/verify")
    assert refused.status_code == 400
    assert "does not resolve" in refused.json()["detail"]
    assert (
        fleet.owner.post("/api/instances/app1/domains/unknown.shop.test/verify").status_code == 404
    )
    assert fleet.other.delete("/api/instances/app1/domains/nowhere.shop.test").status_code == 404
    assert fleet.owner.delete("/api/instances/app1/domains/nowhere.shop.test").status_code == 204


def test_an_instance_has_at_most_20_custom_domains(fleet: Fleet) -> None:
    add = "/api/instances/app2/domains"
    have = len(fleet.other.get(add).json())
    for i in range(20 - have):
        assert fleet.other.post(add, json={"domain": f"d{i}.many.test"}).status_code == 201
    refused = fleet.other.post(add, json={"domain": "one-more.many.test"})
    assert refused.status_code == 409 and "at most 20" in refused.json()["detail"]


def test_a_custom_domain_is_served_only_once_verified(fleet: Fleet) -> None:
    added = fleet.owner.post("/api/instances/app1/domains", json={"domain": "WWW.shop.test"})
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["status"] == "pending" and body["domain"] == "www.shop.test"
    assert body["publish"]["route"] == {
        "type": "CNAME",
        "name": "www.shop.test",
        "value": "app1.localhost",
    }
    assert body["publish"]["dns"]["name"] == "_pocketfleet.www.shop.test"

    assert fleet.via_caddy("www.shop.test").status_code == 404  # refused before verification
    assert fleet.ask("www.shop.test") == 404
    with pytest.raises(httpx.ConnectError):
        fleet.https("www.shop.test")

    verified = fleet.cli("domains", "verify", "app1", "www.shop.test")
    assert verified.returncode == 0, verified.stderr
    assert "verified (http)" in verified.stdout

    assert fleet.via_caddy("www.shop.test").json()["message"] == "API is healthy."
    assert fleet.https("www.shop.test").status_code == 200
    assert fleet.ask("www.shop.test") == 200
    listed = fleet.cli("domains", "ls", "app1")
    assert "www.shop.test" in listed.stdout and "verified" in listed.stdout

    removed = fleet.cli("domains", "rm", "app1", "www.shop.test")
    assert removed.returncode == 0, removed.stderr
    assert fleet.via_caddy("www.shop.test").status_code == 404  # at once
    assert fleet.ask("www.shop.test") == 404


def test_event_streams_pass_through_caddy_unbuffered(fleet: Fleet) -> None:
    with (
        httpx.Client(timeout=30, trust_env=False) as client,
        client.stream(
            "GET",
            f"http://127.0.0.1:{fleet.http_port}/api/realtime",
            headers={"Host": "app1.localhost"},
        ) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        # PocketBase sends PB_CONNECT at once and keeps the stream open: reading it proves
        # that Caddy forwards events as they come
        for line in stream.iter_lines():
            if line.startswith("event:"):
                assert line == "event:PB_CONNECT"
                break


def test_requests_through_caddy_count_as_activity(fleet: Fleet) -> None:
    before = fleet.owner.get("/api/instances/app1").json()["last_request"]
    assert fleet.via_caddy("app1.localhost").status_code == 200  # straight to the instance

    def recorded() -> bool:  # from Caddy's access log, sampled into the instance
        last = fleet.owner.get("/api/instances/app1").json()["last_request"]
        return last is not None and last != before

    wait_for(recorded)
    patched = fleet.owner.patch("/api/instances/app1", json={"idle_timeout_s": 1})
    assert patched.status_code == 200
    wait_for(lambda: fleet.owner.get("/api/instances/app1").json()["status"] == "hibernated")


def test_a_hibernated_instance_wakes_through_caddy(fleet: Fleet) -> None:
    row = fleet.owner.get("/api/instances/app1").json()
    if row["status"] != "hibernated":
        assert fleet.owner.post("/api/instances/app1/hibernate").status_code == 200
    assert fleet.owner.patch("/api/instances/app1", json={"idle_timeout_s": 0}).status_code == 200
    first = fleet.via_caddy("app1.localhost", "/api/health")
    assert first.status_code == 200 and first.json()["message"] == "API is healthy."
    assert fleet.owner.get("/api/instances/app1").json()["status"] == "running"

    def routed_direct() -> bool:  # no longer through the control plane
        upstream = fleet.route("app1.localhost")["handle"][0]  # type: ignore[index]
        return upstream["upstreams"] != [{"dial": f"127.0.0.1:{fleet.serve.port}"}]

    wait_for(routed_direct)
    assert fleet.via_caddy("app1.localhost").status_code == 200


def test_killing_caddy_restores_every_route_within_2_seconds(fleet: Fleet) -> None:
    pid = int((fleet.caddy_dir / "caddy.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()

    def all_served() -> bool:
        return all(
            fleet.via_caddy(h).status_code == 200 for h in ("app1.localhost", "app2.localhost")
        )

    wait_for(all_served, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert fleet.caddy_pid != pid
    assert_admin_on_a_root_only_socket(fleet)  # the restarted Caddy too


def test_a_deleted_instance_disappears_from_caddy(fleet: Fleet) -> None:
    assert fleet.other.delete("/api/instances/app2?purge=true").status_code == 204
    assert fleet.via_caddy("app2.localhost").status_code == 404
    assert fleet.ask("app2.localhost") == 404
    assert fleet.ask("claimed.shop.test") == 404  # its pending domain never was approved


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "localhost:{port}"])
def test_a_tcp_admin_address_is_refused(address: str) -> None:
    root = scratch_dir()
    env = {
        "PF_PROXY": "caddy",
        "PF_START_CADDY": "true",
        "PF_CADDY_ADMIN": address.format(port=free_port()),
        "PF_CADDY_HTTP": f"127.0.0.1:{free_port()}",
        "PF_CADDY_TLS": "off",
    }
    server = ServeProcess(root / "data", env=env)
    try:
        with pytest.raises(AssertionError, match="serve exited") as refused:
            server.start()
        assert "must be a unix socket" in str(refused.value)
        assert not (root / "data" / "caddy" / "caddy.pid").exists()  # no Caddy was started
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
