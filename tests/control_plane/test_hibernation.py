"""Hibernation with real processes: idle instances go to sleep (their process ends), the next
request wakes them and gets its real answer, concurrent requests share one start, an open
event stream keeps an instance awake, a broken engine ends `failed`, and a restart of the
control plane in between changes nothing. Plus the refusals of `/hibernate` and `/wake`."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import psutil
import pytest

from tests.support.server import ServeProcess, running_server, sign_up

SUPERUSER_PASSWORD = "a-long-password-1"
_names = itertools.count()


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    # fleet default: never idle (each test sets its instance's limit); a fast sweep
    env = {
        "PF_IDLE_TIMEOUT_S": "0",
        "PF_IDLE_SWEEP_INTERVAL_S": "0.3",
        "PF_MAX_CRASH_RESTARTS": "2",
        "PF_HIBERNATE_DRAIN_S": "5",
    }
    with running_server(env=env) as server:
        yield server


class Owner:
    def __init__(self, serve: ServeProcess) -> None:
        self.serve = serve
        self.email = f"owner{next(_names)}@example.com"
        self.api = serve.client()
        self.api.headers["Authorization"] = f"Bearer {sign_up(self.api, self.email)}"

    def running_instance(self) -> str:
        name = f"nap{next(_names)}"
        body = {"name": name, "superuser_password": SUPERUSER_PASSWORD}
        assert self.api.post("/api/instances", json=body).status_code == 201
        started = self.api.post(f"/api/instances/{name}/start").json()
        assert started["status"] == "running", started
        return name

    def row(self, name: str) -> dict[str, Any]:
        row: dict[str, Any] = self.api.get(f"/api/instances/{name}").json()
        return row

    def hibernate(self, name: str) -> dict[str, Any]:
        response = self.api.post(f"/api/instances/{name}/hibernate")
        assert response.status_code == 200, response.text
        row: dict[str, Any] = response.json()
        return row

    @contextmanager
    def superuser_client(self, name: str) -> Iterator[httpx.Client]:
        """A client of the instance through the proxy, signed in as its superuser."""
        with self.serve.instance_client(name) as client:
            auth = client.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": self.email, "password": SUPERUSER_PASSWORD},
            )
            assert auth.status_code == 200, auth.text
            client.headers["Authorization"] = auth.json()["token"]
            yield client


@pytest.fixture
def owner(serve: ServeProcess) -> Iterator[Owner]:
    person = Owner(serve)
    yield person
    person.api.close()


def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def instance_pids(serve: ServeProcess, instance_id: str) -> list[int]:
    """Live processes serving the instance (their command line names its folder), not
    counting the bwrap that holds its sandbox."""
    folder = str(serve.data_dir / "instances" / instance_id)
    pids = []
    for process in psutil.process_iter(["cmdline", "status", "name"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "bwrap" or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(folder in a for a in cmdline):
            pids.append(process.pid)
    return pids


def starts_logged(owner: Owner, name: str) -> int:
    """How many times the engine printed that it started (PocketBase: "Server started")."""
    lines = owner.api.get(f"/api/instances/{name}/logs", params={"tail": 5000}).json()["lines"]
    return sum("Server started" in line for line in lines)


def test_an_idle_instance_hibernates_and_its_next_request_wakes_it(owner: Owner) -> None:
    name = owner.running_instance()
    instance_id = owner.row(name)["id"]
    with owner.superuser_client(name) as pb:
        created = pb.post(
            "/api/collections",
            json={"name": "notes", "type": "base", "fields": [{"name": "title", "type": "text"}]},
        )
        assert created.status_code == 200, created.text
        assert pb.post("/api/collections/notes/records", json={"title": "kept"}).status_code == 200
        assert instance_pids(owner.serve, instance_id)

        assert owner.api.patch(f"/api/instances/{name}", json={"idle_timeout_s": 1}).is_success
        eventually(lambda: owner.row(name)["status"] == "hibernated")
        row = owner.row(name)
        assert row["status_reason"].startswith("idle for")
        assert row["hibernated_at"] is not None and row["asleep_s"] is not None
        assert instance_pids(owner.serve, instance_id) == []

        # stay awake from now on, so that the woken instance is not put back to sleep
        assert owner.api.patch(f"/api/instances/{name}", json={"idle_timeout_s": 0}).is_success
        listed = pb.get("/api/collections/notes/records")

    assert listed.status_code == 200, listed.text
    assert [item["title"] for item in listed.json()["items"]] == ["kept"]
    eventually(lambda: owner.row(name)["status"] == "running")  # recorded right after
    row = owner.row(name)
    assert row["status_reason"].startswith("woken by a request")
    assert (row["hibernated_at"], row["asleep_s"]) == (None, None)
    assert len(instance_pids(owner.serve, instance_id)) == 1


def test_concurrent_requests_during_a_wake_share_one_start(owner: Owner) -> None:
    name = owner.running_instance()
    before = starts_logged(owner, name)
    assert owner.hibernate(name)["status"] == "hibernated"

    def get_health(_: int) -> int:
        with owner.serve.instance_client(name) as client:
            return client.get("/api/health").status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(get_health, range(20)))

    assert codes == [200] * 20
    eventually(lambda: owner.row(name)["status"] == "running")  # recorded right after
    assert starts_logged(owner, name) == before + 1


def test_an_open_event_stream_keeps_an_instance_awake(owner: Owner) -> None:
    name = owner.running_instance()
    with (
        owner.serve.instance_client(name) as client,
        client.stream("GET", "/api/realtime") as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()  # kept: dropping the iterator would close the stream
        assert next(lines).startswith("id:")  # PB_CONNECT: the stream is open
        assert owner.api.patch(f"/api/instances/{name}", json={"idle_timeout_s": 1}).is_success
        time.sleep(2.5)  # the limit and about ten sweeps pass with the stream open
        assert owner.row(name)["status"] == "running"
    eventually(lambda: owner.row(name)["status"] == "hibernated")


def test_an_engine_that_fails_to_start_answers_503_and_ends_failed(
    owner: Owner, serve: ServeProcess
) -> None:
    name = owner.running_instance()
    instance_id = owner.row(name)["id"]
    assert owner.hibernate(name)["status"] == "hibernated"
    database = serve.data_dir / "instances" / instance_id / "pb_data" / "data.db"
    database.write_bytes(b"this is not a database" * 512)

    with serve.instance_client(name) as client:
        retry_afters = []
        for attempt in range(3):  # PF_MAX_CRASH_RESTARTS=2: the third failure is final
            response = client.get("/api/health")
            assert response.status_code == 503, response.text
            retry_afters.append(int(response.headers["retry-after"]))
            if attempt < 2:
                time.sleep(retry_afters[-1])  # as a client would, before trying again
        row = owner.row(name)
        assert row["status"] == "failed", row
        assert "failed to wake 3 times in a row" in row["status_reason"]
        assert "exited with code 1" in row["status_reason"]
        response = client.get("/api/health")
    assert response.status_code == 503
    assert retry_afters[:2] == [1, 2]  # the back-off between failed wakes


def test_refusals_of_hibernate_and_wake(owner: Owner, serve: ServeProcess) -> None:
    name = owner.running_instance()
    stranger = Owner(serve)
    for verb in ("hibernate", "wake"):
        assert stranger.api.post(f"/api/instances/{name}/{verb}").status_code == 404
    assert owner.api.post(f"/api/instances/{name}/wake").json()["status"] == "running"
    assert owner.hibernate(name)["status"] == "hibernated"
    assert owner.hibernate(name)["status"] == "hibernated"  # again: nothing changes
    woken = owner.api.post(f"/api/instances/{name}/wake")
    assert (woken.status_code, woken.json()["status"]) == (200, "running")
    assert owner.api.post(f"/api/instances/{name}/stop").json()["status"] == "stopped"
    for verb in ("hibernate", "wake"):
        refused = owner.api.post(f"/api/instances/{name}/{verb}")
        assert refused.status_code == 409, refused.text
        assert "start it instead" in refused.json()["detail"]
    assert owner.api.post("/api/instances/no-such-app/hibernate").status_code == 404
    stranger.api.close()


def test_hibernation_and_wake_survive_a_control_plane_restart(
    owner: Owner, serve: ServeProcess
) -> None:
    name = owner.running_instance()
    instance_id = owner.row(name)["id"]
    assert owner.hibernate(name)["status"] == "hibernated"

    serve.stop()
    serve.start()
    # a few reconcile passes (0.5 s apart) later it still sleeps: nothing started it
    time.sleep(1.5)
    assert owner.row(name)["status"] == "hibernated"
    assert instance_pids(serve, instance_id) == []

    with serve.instance_client(name) as client:
        assert client.get("/api/health").status_code == 200
    # the wake answers first and records `running` right after (off the request's path)
    eventually(lambda: (owner.row(name)["status"], owner.row(name)["desired"]) == ("running",) * 2)
    assert len(instance_pids(serve, instance_id)) == 1
