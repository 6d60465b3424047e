"""Scheduled jobs end to end (issue 14), with `pocketfleet serve` and the real PocketBase: a
job `@every 2s` wakes a hibernated instance through the proxy, its runs are recorded with
their status, it sleeps again after its idle time while the job is paused, and its runs go on
after a restart of the control plane. A 404 is recorded as 404, a slow route as `timeout`
(tried again, never two runs of a job at once), a 5xx is tried again; what a job sends
arrives as sent; runs are kept per `PF_JOB_RUNS_KEEP`; the jobs of a deleted instance go with
it. Every refusal: another tenant gets 404, bad input 422 (never echoed), too many jobs 409.
And the CLI's `pocketfleet jobs` verbs."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import BIN, ServeProcess, running_server, sign_up

_ids = itertools.count()

JOBS_PER_INSTANCE = 4
RUNS_KEEP = 3
SERVER_ENV = {
    "PF_JOB_MIN_INTERVAL_S": "2",  # production: 10
    "PF_JOBS_PER_INSTANCE": str(JOBS_PER_INSTANCE),
    "PF_JOB_RUNS_KEEP": str(RUNS_KEEP),
    "PF_JOB_RETRY_WAIT_S": "0.2",
    "PF_IDLE_TIMEOUT_S": "0",  # never idle, unless a test sets its instance's limit
    "PF_IDLE_SWEEP_INTERVAL_S": "0.3",
}

# routes of the instance with hooks (PocketBase's JS hooks, in its pb_hooks/)
HOOKS = """
routerAdd("GET", "/slow", (e) => { sleep(3000); return e.string(200, "late") })
routerAdd("GET", "/boom", (e) => e.string(500, "boom"))
routerAdd("POST", "/echo", (e) => e.json(200, {
    method: e.request.method,
    token: e.request.header.get("X-Token"),
    job: e.request.header.get("X-Pocketfleet-Job"),
    type: e.request.header.get("Content-Type"),
    body: e.requestInfo().body,
}))
"""


@pytest.fixture(scope="module")
def backend() -> str:
    return "sqlite"  # the API and its storage are the same over PostgreSQL (see the migrations)


@pytest.fixture(scope="module")
def serve(database_url: str | None) -> Iterator[ServeProcess]:
    with running_server(database_url=database_url, env=SERVER_ENV) as server:
        yield server


def eventually(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not in time: {what}"
        time.sleep(0.1)


class Owner:
    def __init__(self, serve: ServeProcess) -> None:
        self.serve = serve
        self.token = sign_up(serve.client(), f"jobs{next(_ids)}@example.com")
        self.api = serve.client(self.token)

    def instance(self, *, running: bool = True) -> str:
        name = f"jobs{next(_ids)}"
        created = self.api.post("/api/instances", json={"name": name})
        assert created.status_code == 201, created.text
        if running:
            started = self.api.post(f"/api/instances/{name}/start").json()
            assert started["status"] == "running", started
        return name

    def row(self, name: str) -> dict[str, Any]:
        row: dict[str, Any] = self.api.get(f"/api/instances/{name}").json()
        return row

    def add_job(self, name: str, **body: Any) -> dict[str, Any]:
        response = self.api.post(f"/api/instances/{name}/jobs", json=body)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def runs(self, name: str, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
        response = self.api.get(f"/api/instances/{name}/jobs/{job_id}/runs?limit={limit}")
        assert response.status_code == 200, response.text
        runs: list[dict[str, Any]] = response.json()
        return runs

    def wait_runs(self, name: str, job_id: str, count: int, timeout: float = 60) -> list[Any]:
        eventually(
            lambda: len(self.runs(name, job_id)) >= count, timeout, f"{count} runs of {job_id}"
        )
        return self.runs(name, job_id)


@pytest.fixture(scope="module")
def owner(serve: ServeProcess) -> Iterator[Owner]:
    person = Owner(serve)
    yield person
    person.api.close()


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_refusal(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and {"code", "detail", "errors"} <= body.keys(), body
    if field is not None:
        assert body["field"] == field, body


def with_hooks(owner: Owner) -> str:
    """A running instance whose pb_hooks/ holds `HOOKS` (written while it is stopped)."""
    name = owner.instance()
    assert owner.api.post(f"/api/instances/{name}/stop").json()["status"] == "stopped"
    folder = owner.serve.data_dir / "instances" / owner.row(name)["id"]
    hooks = folder / "pb_hooks" / "jobs.pb.js"
    hooks.write_text(HOOKS)
    owner_of = folder.stat()
    os.chown(hooks, owner_of.st_uid, owner_of.st_gid)  # as the instance's own files are
    assert owner.api.post(f"/api/instances/{name}/start").json()["status"] == "running"
    return name


# ----- the proof: a hibernated instance woken by its job


def test_a_job_every_2s_wakes_a_hibernated_instance_and_its_runs_are_recorded(
    owner: Owner, serve: ServeProcess
) -> None:
    name = owner.instance()
    hibernated = owner.api.post(f"/api/instances/{name}/hibernate")
    assert hibernated.status_code == 200, hibernated.text
    eventually(lambda: owner.row(name)["status"] == "hibernated", what="hibernated")

    job = owner.add_job(name, schedule="@every 2s", method="GET", path="/api/health")
    assert job["schedule"] == "@every 2s" and job["paused"] is False
    assert (job["method"], job["path"], job["instance"]) == ("GET", "/api/health", name)
    assert job["next_run"] is not None and moment(job["next_run"]) > moment(job["created"])
    assert job["last_run"] is None and job["last_status"] is None

    runs = owner.wait_runs(name, job["id"], 2)
    for run in runs:
        assert (run["status"], run["http_status"], run["attempts"]) == ("200", 200, 1), run
        assert "API is healthy" in run["response"] and run["error"] == ""
        assert run["duration_ms"] >= 0 and run["job_id"] == job["id"]
    assert moment(runs[0]["started"]) > moment(runs[1]["started"])  # newest first
    row = owner.row(name)
    assert row["status"] == "running", row
    assert row["status_reason"].startswith("woken by a request")
    listed = owner.api.get(f"/api/instances/{name}/jobs").json()
    assert [item["id"] for item in listed] == [job["id"]]
    assert listed[0]["last_status"] == "200" and listed[0]["last_run"] is not None

    # its runs count as the instance's activity: with an idle limit of 4 s it stays awake
    assert owner.api.patch(f"/api/instances/{name}", json={"idle_timeout_s": 4}).is_success
    time.sleep(6)
    assert (owner.row(name)["status"], owner.row(name)["started"]) == ("running", row["started"])

    # paused, the job leaves the instance alone: it sleeps again after its idle time
    paused = owner.api.patch(f"/api/instances/{name}/jobs/{job['id']}", json={"paused": True})
    assert paused.status_code == 200, paused.text
    assert (paused.json()["paused"], paused.json()["next_run"]) == (True, None)
    eventually(lambda: owner.row(name)["status"] == "hibernated", what="asleep again")
    seen = [run["id"] for run in owner.runs(name, job["id"])]
    time.sleep(4.5)  # two periods of the schedule pass
    assert [run["id"] for run in owner.runs(name, job["id"])] == seen
    assert owner.row(name)["status"] == "hibernated"

    # resumed, it wakes the instance again; and its runs go on after a restart
    resumed = owner.api.patch(f"/api/instances/{name}/jobs/{job['id']}", json={"paused": False})
    assert resumed.json()["paused"] is False and resumed.json()["next_run"] is not None
    eventually(lambda: owner.runs(name, job["id"])[0]["id"] != seen[0], what="a new run")
    assert owner.runs(name, job["id"])[0]["status"] == "200"
    eventually(lambda: owner.row(name)["status"] == "running", what="awake again")
    serve.stop()
    serve.start()
    newest = owner.runs(name, job["id"])[0]["id"]
    eventually(lambda: owner.runs(name, job["id"])[0]["id"] != newest, what="a run after restart")

    # only the newest PF_JOB_RUNS_KEEP runs are kept
    first = runs[-1]["id"]
    eventually(lambda: first not in [run["id"] for run in owner.runs(name, job["id"])])
    assert len(owner.runs(name, job["id"])) == RUNS_KEEP
    assert owner.api.delete(f"/api/instances/{name}/jobs/{job['id']}").status_code == 204


def test_a_path_answering_404_records_404_without_trying_again(owner: Owner) -> None:
    name = owner.instance()
    job = owner.add_job(name, schedule="@every 2s", path="/api/no-such-route")
    run = owner.wait_runs(name, job["id"], 1)[0]
    assert (run["status"], run["http_status"], run["attempts"]) == ("404", 404, 1), run
    assert "not found" in run["response"].lower()

    assert owner.api.delete(f"/api/instances/{name}/jobs/{job['id']}").status_code == 204
    assert_refusal(owner.api.get(f"/api/instances/{name}/jobs/{job['id']}"), 404)
    assert_refusal(owner.api.get(f"/api/instances/{name}/jobs/{job['id']}/runs"), 404)
    assert owner.api.get(f"/api/instances/{name}/jobs").json() == []


def test_timeouts_and_5xx_are_tried_again_and_runs_of_a_job_never_overlap(
    owner: Owner,
) -> None:
    name = with_hooks(owner)
    slow = owner.add_job(name, schedule="@every 2s", path="/slow", timeout_s=1)
    boom = owner.add_job(name, schedule="@every 2s", path="/boom")

    failed = owner.wait_runs(name, boom["id"], 1)[0]
    assert (failed["status"], failed["http_status"], failed["attempts"]) == ("500", 500, 3)
    assert failed["response"] == "boom"

    # each run: three attempts of 1 s and two back-offs, longer than the schedule's period
    runs = owner.wait_runs(name, slow["id"], 2)
    for run in runs:
        assert (run["status"], run["http_status"], run["attempts"]) == ("timeout", None, 3)
        assert "within 1 s" in run["error"], run
        assert run["duration_ms"] >= 3000
    for later, earlier in itertools.pairwise(runs):
        ended = moment(earlier["started"]).timestamp() + earlier["duration_ms"] / 1000
        assert ended <= moment(later["started"]).timestamp(), (earlier, later)
    for job in (slow, boom):
        assert owner.api.delete(f"/api/instances/{name}/jobs/{job['id']}").status_code == 204


def test_what_a_job_sends_arrives_and_its_secrets_are_not_shown_again(owner: Owner) -> None:
    name = with_hooks(owner)
    job = owner.add_job(
        name,
        schedule="@every 2s",
        method="post",
        path="/echo",
        headers={"X-Token": "s3cret-value"},
        body=json.dumps({"hello": "world"}),
    )
    assert job["method"] == "POST"
    assert job["headers"] == {"X-Token": "••••••••"} and job["body_bytes"] == 18
    for shown in (job, owner.api.get(f"/api/instances/{name}/jobs/{job['id']}").json()):
        assert "s3cret-value" not in json.dumps(shown) and "world" not in json.dumps(shown)

    run = owner.wait_runs(name, job["id"], 1)[0]
    assert run["status"] == "200", run
    echoed = json.loads(run["response"])
    assert echoed == {
        "method": "POST",
        "token": "s3cret-value",
        "job": job["id"],
        "type": "application/json",
        "body": {"hello": "world"},
    }
    assert owner.api.delete(f"/api/instances/{name}/jobs/{job['id']}").status_code == 204


def test_the_jobs_of_a_deleted_instance_go_with_it(owner: Owner, serve: ServeProcess) -> None:
    name = owner.instance()
    job = owner.add_job(name, schedule="@every 2s", path="/api/health")
    owner.wait_runs(name, job["id"], 1)
    instance_id = owner.row(name)["id"]
    assert owner.api.delete(f"/api/instances/{name}").status_code == 204
    assert_refusal(owner.api.get(f"/api/instances/{name}/jobs"), 404)

    def jobs_left() -> int:
        with sqlite3.connect(serve.data_dir / "control.db") as db:
            rows = db.execute(
                "SELECT count(*) FROM scheduled_job WHERE instance_id = ?", (instance_id,)
            )
            count: int = rows.fetchone()[0]
            return count

    eventually(lambda: jobs_left() == 0, what="the job removed")


# ----- refusals


@pytest.fixture(scope="module")
def stopped(owner: Owner) -> str:
    """One stopped instance for the refusal tests (none of them runs anything)."""
    return owner.instance(running=False)


BAD_JOBS: dict[str, tuple[dict[str, Any], str]] = {
    "empty schedule": ({"schedule": ""}, "schedule"),
    "not a schedule": ({"schedule": "every other day"}, "schedule"),
    "below the minimum interval": ({"schedule": "@every 1s"}, "schedule"),
    "never fires": ({"schedule": "0 0 30 2 *"}, "schedule"),
    "method TRACE": ({"method": "TRACE"}, "method"),
    "method CONNECT": ({"method": "CONNECT"}, "method"),
    "relative path": ({"path": "api/health"}, "path"),
    "a host": ({"path": "//evil.example/x"}, "path"),
    "a URL": ({"path": "http://evil.example/x"}, "path"),
    "a space": ({"path": "/a b"}, "path"),
    "a fragment": ({"path": "/a#b"}, "path"),
    "too long a path": ({"path": "/" + "a" * 3000}, "path"),
    "Host header": ({"headers": {"Host": "evil.example"}}, "headers"),
    "hop-by-hop header": ({"headers": {"Connection": "close"}}, "headers"),
    "Transfer-Encoding": ({"headers": {"Transfer-Encoding": "chunked"}}, "headers"),
    "forwarding header": ({"headers": {"X-Forwarded-For": "10.0.0.1"}}, "headers"),
    "header name": ({"headers": {"Bad Name": "x"}}, "headers"),
    "header injection": ({"headers": {"X-A": "a\r\nX-Evil: 1"}}, "headers"),
    "header twice": ({"headers": {"X-A": "1", "x-a": "2"}}, "headers"),
    "body over 64 KB": ({"method": "POST", "body": "é" * 33000}, "body"),
    "body with GET": ({"method": "GET", "body": "{}"}, "body"),
    "body with HEAD": ({"method": "HEAD", "body": "{}"}, "body"),
    "timeout 0": ({"timeout_s": 0}, "timeout_s"),
    "timeout 301": ({"timeout_s": 301}, "timeout_s"),
    "unknown field": ({"url": "http://evil.example/"}, "url"),
}


@pytest.mark.parametrize(("change", "field"), BAD_JOBS.values(), ids=BAD_JOBS.keys())
def test_bad_jobs_are_422_naming_the_field_and_never_echoed(
    owner: Owner, stopped: str, change: dict[str, Any], field: str
) -> None:
    name = stopped
    body = {"schedule": "@every 2s", "path": "/api/health", **change}
    refused = owner.api.post(f"/api/instances/{name}/jobs", json=body)
    assert_refusal(refused, 422, field)
    assert "evil.example" not in refused.text and "a\\r\\nX-Evil" not in refused.text
    assert owner.api.get(f"/api/instances/{name}/jobs").json() == []


def test_bad_changes_are_422(owner: Owner, stopped: str) -> None:
    name = stopped
    job = owner.add_job(name, schedule="@daily", method="POST", path="/x", body="{}")
    url = f"/api/instances/{name}/jobs/{job['id']}"
    assert_refusal(owner.api.patch(url, json={"schedule": "@every 1s"}), 422, "schedule")
    assert_refusal(owner.api.patch(url, json={"method": "GET"}), 422, "body")
    assert_refusal(owner.api.patch(url, json={"path": "//evil.example"}), 422, "path")
    assert_refusal(owner.api.patch(url, json={"timeout_s": 1000}), 422, "timeout_s")
    unchanged = owner.api.get(url).json()
    assert (unchanged["schedule"], unchanged["method"], unchanged["path"]) == (
        "@daily",
        "POST",
        "/x",
    )
    changed = owner.api.patch(url, json={"method": "GET", "body": None, "schedule": "0 9 * * 1"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["method"], changed.json()["body_bytes"]) == ("GET", None)
    assert changed.json()["schedule"] == "0 9 * * 1"
    assert moment(changed.json()["next_run"]).strftime("%a %H:%M") == "Mon 09:00"
    assert owner.api.delete(url).status_code == 204


def test_an_instance_has_at_most_its_number_of_jobs(owner: Owner, stopped: str) -> None:
    name = stopped
    made = [
        owner.add_job(name, schedule="@hourly", path=f"/n{n}") for n in range(JOBS_PER_INSTANCE)
    ]
    refused = owner.api.post(
        f"/api/instances/{name}/jobs", json={"schedule": "@hourly", "path": "/one-more"}
    )
    assert_refusal(refused, 409)
    assert f"at most {JOBS_PER_INSTANCE} jobs" in refused.json()["detail"]
    for job in made:
        assert owner.api.delete(f"/api/instances/{name}/jobs/{job['id']}").status_code == 204


def test_another_tenant_gets_404_for_everything(
    owner: Owner, serve: ServeProcess, stopped: str
) -> None:
    name = stopped
    job = owner.add_job(name, schedule="@daily", path="/api/health")
    url = f"/api/instances/{name}/jobs/{job['id']}"
    stranger = Owner(serve)
    theirs = stranger.instance(running=False)
    try:
        good = {"schedule": "@daily", "path": "/api/health"}
        assert_refusal(stranger.api.post(f"/api/instances/{name}/jobs", json=good), 404)
        assert_refusal(stranger.api.get(f"/api/instances/{name}/jobs"), 404)
        assert_refusal(stranger.api.get(url), 404)
        assert_refusal(stranger.api.patch(url, json={"paused": True}), 404)
        assert_refusal(stranger.api.delete(url), 404)
        assert_refusal(stranger.api.get(f"{url}/runs"), 404)
        # nor through an instance of theirs
        assert_refusal(stranger.api.get(f"/api/instances/{theirs}/jobs/{job['id']}"), 404)
        assert_refusal(stranger.api.delete(f"/api/instances/{theirs}/jobs/{job['id']}"), 404)
        assert_refusal(owner.api.get(f"/api/instances/{name}/jobs/no-such-job"), 404)
        assert_refusal(owner.api.get("/api/instances/no-such-app/jobs"), 404)
        assert owner.api.get(url).json()["paused"] is False  # untouched
    finally:
        stranger.api.close()
    assert owner.api.delete(url).status_code == 204


def test_unauthenticated_is_401(serve: ServeProcess) -> None:
    with serve.client() as anonymous:
        assert_refusal(anonymous.get("/api/instances/any/jobs"), 401)


# ----- the CLI


def test_the_cli_verbs(owner: Owner, serve: ServeProcess, tmp_path: Path) -> None:
    name = owner.instance()
    env = {**serve.env(), "PF_URL": serve.url, "PF_TOKEN": owner.token}
    env.update(XDG_CONFIG_HOME=str(tmp_path), COLUMNS="200")

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "pocketfleet"), "jobs", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (result.returncode == 0) is ok, result.stdout + result.stderr
        return result

    added = cli("add", name, "@every 2s", "/api/health", "-H", "X-Token: abc").stdout
    job_id = added.split()[0]
    assert "GET /api/health" in added and "next run" in added
    assert job_id in cli("ls", name).stdout
    owner.wait_runs(name, job_id, 1)
    assert "200" in cli("runs", name, job_id).stdout
    assert "paused" in cli("pause", name, job_id).stdout
    assert "next run" in cli("resume", name, job_id).stdout
    refused = cli("add", name, "@every 1s", "/api/health", ok=False)
    assert "422" in refused.stderr and "shortest allowed interval" in refused.stderr
    assert "removed" in cli("rm", name, job_id).stdout
    assert job_id not in cli("ls", name).stdout
