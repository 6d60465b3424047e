"""Schemathesis over the API's own OpenAPI document, against a real server (issue 13).

One `pocketfleet serve` (SQLite), one signed-up account (the first, made an operator so the
operators' routes answer too) with a real running PocketBase instance, and `schemathesis run`
as that account over `/openapi.json`, checking `not_a_server_error` and
`response_schema_conformance` only: no 5xx, and every documented answer in its documented
shape. The run is pinned (`schemathesis` in the `dev` extras), seeded and deterministic, one
worker, no shrinking, up to `MAX_EXAMPLES` generated cases per operation, each unlike the
others (`unique-inputs`: an operation whose only input is a path parameter bound to a
dictionary otherwise sends one request over and over, e.g. 16 of 20 alike snapshots,
restores, drills and admin links, 70% of the run's time for no other answer; the coverage
phase adds the boundary cases of each constraint; no stateful phase, whose inferred links
would hand the destructive operations the run's own fixtures), each request and the whole run
under a deadline.

Path parameters are mostly the real objects (dictionaries bound with a probability, the rest
generated): `{name}` the running instance, `{backup_id}` a real snapshot, `{domain}` a claimed
domain. The destructive operations get throwaway objects instead, so that they act for real
without taking the fixtures from the operations after them:

- `DELETE /api/instances/{name}` and `PATCH /api/fleet/instances/{name}` (a disk quota of
  1 MB or 16 processes would stop it) name their own stopped instances;
- `DELETE /api/instances/{name}/backups/{backup_id}` a snapshot of its own (restores and
  downloads keep theirs), `DELETE .../domains/{domain}` a claim of its own;
- `DELETE /api/sessions/current` runs with a second session of the account (the run's own
  session stays valid), `DELETE /api/tokens/{token_id}` names a throwaway API token (the run
  authenticates with a session, which that route cannot revoke);
- `POST /api/accounts/{account_id}/suspend` and `/resume` name a second account (the run's
  own id is never in the document nor in any dictionary).

Engine installs cannot reach a package index (`PIP_NO_INDEX` in the server's environment):
a version that is not installed is a quick 400, never a download per generated case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServeProcess, running_server, sign_up

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = ("not_a_server_error", "response_schema_conformance")
SEED = 13
MAX_EXAMPLES = 12  # per operation and phase (the whole suite must stay under 15 min)
REQUEST_TIMEOUT_S = 30  # one request: a start or a restore waits for the instance
RUN_DEADLINE_S = 180  # the whole run (under a minute here), within pytest's 300 s

EMAIL = "fuzzer@example.com"
PASSWORD = "correct-horse-battery"
INSTANCE = "fuzzed"
THROWAWAY_INSTANCE = "fuzz-deleted"
LIMITED_INSTANCE = "fuzz-limited"
DOMAIN = "shop.fuzzed.example.com"
THROWAWAY_DOMAIN = "gone.fuzzed.example.com"

SERVER_ENV = {
    "PF_FIRST_ACCOUNT_IS_OPERATOR": "true",
    "PF_DEFAULT_QUOTA": "5",  # the fixtures' three and two the fuzzer may create
    "PF_BACKUP_KEEP_LAST": "1000",  # the fuzzer's snapshots never prune the fixtures' away
    "PIP_NO_INDEX": "1",
}


@dataclass
class Fixtures:
    """What the run is pointed at (see the module's docstring)."""

    token: str
    second_session: str
    throwaway_token_id: str
    other_account_id: str
    backup_id: str
    throwaway_backup_id: str


def _ok(response: httpx.Response, *statuses: int) -> httpx.Response:
    assert response.status_code in (statuses or (200,)), response.text
    return response


def _wait_for(api: httpx.Client, path: str, done: str, key: str = "status") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _ok(api.get(path)).json()[key] == done:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} never reached {key}={done}: {api.get(path).text}")


def _snapshot(api: httpx.Client) -> str:
    backup_id: str = _ok(api.post(f"/api/instances/{INSTANCE}/backups"), 201).json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = _ok(api.get(f"/api/instances/{INSTANCE}/backups")).json()["snapshots"]
        status = next(row["status"] for row in rows if row["id"] == backup_id)
        if status == "good":
            return backup_id
        assert status == "running", rows
        time.sleep(0.2)
    raise AssertionError(f"snapshot {backup_id} did not finish")


def prepare(serve: ServeProcess) -> Fixtures:
    with serve.client() as api:
        token = sign_up(api, EMAIL, PASSWORD)
        api.headers["Authorization"] = f"Bearer {token}"
        assert _ok(api.get("/api/accounts/me")).json()["is_operator"] is True
        second = _ok(api.post("/api/sessions", json={"email": EMAIL, "password": PASSWORD}))
        throwaway = _ok(api.post("/api/tokens", json={"name": "throwaway"}), 201).json()
        other = _ok(
            api.post("/api/accounts", json={"email": "other@example.com", "password": PASSWORD}),
            201,
        ).json()
        for name in (INSTANCE, THROWAWAY_INSTANCE, LIMITED_INSTANCE):
            _ok(api.post("/api/instances", json={"name": name}), 201)
        for name in (THROWAWAY_INSTANCE, LIMITED_INSTANCE):
            _ok(api.post(f"/api/instances/{name}/stop"))
        _wait_for(api, f"/api/instances/{INSTANCE}", "running")
        for domain in (DOMAIN, THROWAWAY_DOMAIN):
            _ok(api.post(f"/api/instances/{INSTANCE}/domains", json={"domain": domain}), 201)
        return Fixtures(
            token=token,
            second_session=second.json()["token"],
            throwaway_token_id=throwaway["id"],
            other_account_id=other["id"],
            backup_id=_snapshot(api),
            throwaway_backup_id=_snapshot(api),
        )


def _toml(value: object) -> str:
    return json.dumps(value)  # a JSON string, number or list of them is a TOML one too


def _operation(name: str, **settings: dict[str, str]) -> str:
    """A `[[operations]]` table: settings of the operation `name` ("METHOD /path") only."""
    lines = ["[[operations]]", f"include-name = {_toml(name)}"]
    for table, values in settings.items():
        lines += [f"{table}.{_toml(key)} = {_toml(value)}" for key, value in values.items()]
    return "\n".join(lines)


def config(fixtures: Fixtures) -> str:
    """The `schemathesis.toml` of the run (see the module's docstring)."""
    project = [
        f"seed = {SEED}",
        "workers = 1",
        "continue-on-failure = true",
        f"request-timeout = {REQUEST_TIMEOUT_S}",
        f"headers = {{ Authorization = {_toml('Bearer ' + fixtures.token)} }}",
        "[phases]",
        "examples.enabled = true",
        "coverage.enabled = true",
        "fuzzing.enabled = true",
        "stateful.enabled = false",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        "no-shrink = true",
        "deterministic = true",
        "unique-inputs = true",
        "database = 'none'",
        "[checks]",
        "enabled = false",
        *(f"{check}.enabled = true" for check in CHECKS),
        "[dictionaries]",
        f"instances.values = {_toml([INSTANCE])}",
        f"backups.values = {_toml([fixtures.backup_id])}",
        f"domains.values = {_toml([DOMAIN])}",
        "[parameters]",
        '"path.name" = { dictionary = "instances", probability = 0.8 }',
        '"path.backup_id" = { dictionary = "backups", probability = 0.8 }',
        '"path.domain" = { dictionary = "domains", probability = 0.8 }',
    ]
    suspended = {"path.account_id": fixtures.other_account_id}
    operations = [
        _operation("DELETE /api/instances/{name}", parameters={"path.name": THROWAWAY_INSTANCE}),
        _operation("PATCH /api/fleet/instances/{name}", parameters={"path.name": LIMITED_INSTANCE}),
        _operation(
            "DELETE /api/instances/{name}/backups/{backup_id}",
            parameters={"path.name": INSTANCE, "path.backup_id": fixtures.throwaway_backup_id},
        ),
        _operation(
            "DELETE /api/instances/{name}/domains/{domain}",
            parameters={"path.name": INSTANCE, "path.domain": THROWAWAY_DOMAIN},
        ),
        _operation(
            "DELETE /api/tokens/{token_id}",
            parameters={"path.token_id": fixtures.throwaway_token_id},
        ),
        _operation("POST /api/accounts/{account_id}/suspend", parameters=suspended),
        _operation("POST /api/accounts/{account_id}/resume", parameters=suspended),
        _operation(
            "DELETE /api/sessions/current",
            headers={"Authorization": f"Bearer {fixtures.second_session}"},
        ),
    ]
    return "\n\n".join(["\n".join(project), *operations]) + "\n"


@dataclass
class Failure:
    operation: str
    text: str


def failures_of(junit: Path) -> list[Failure]:
    """Every failure the JUnit report records, by operation."""
    found: list[Failure] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        for problem in [*case.iter("failure"), *case.iter("error")]:
            text = (problem.get("message") or "") + "\n" + (problem.text or "")
            found.append(Failure(str(case.get("name")), text.strip()))
    return found


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    """SQLite only: the document and the handlers are the same over either control database."""
    with running_server(env=SERVER_ENV) as server:
        yield server


def test_schemathesis_finds_no_server_error_and_no_answer_off_its_schema(
    serve: ServeProcess, tmp_path: Path
) -> None:
    fixtures = prepare(serve)
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(fixtures))
    junit = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    done = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config_file),
            "--no-color",
            "run",
            f"{serve.url}/openapi.json",
            "--report",
            "junit",
            "--report-junit-path",
            str(junit),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE_S,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    failures = failures_of(junit) if junit.exists() else []
    listed = "\n\n".join(f"== {failure.operation}\n{failure.text}" for failure in failures)
    output = "" if failures else f"\n--- its output:\n{done.stdout[-20000:]}\n{done.stderr[-5000:]}"
    assert done.returncode == 0 and not failures, (
        f"schemathesis exited {done.returncode} with {len(failures)} failures:\n\n{listed}{output}"
    )
    with serve.client(fixtures.token) as api:  # the run's fixtures outlived it
        _ok(api.get(f"/api/instances/{INSTANCE}"))
