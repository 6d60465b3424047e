"""Per-instance limits through the real API, with real PocketBase processes: disk usage measured
and shown, the disk quota enforced (a stop with its reason, starts refused with 409, recovery
once under), and operators' overrides (owners refused, bad values refused)."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import BIN, ServeProcess, running_server, sign_up

MiB = 1024 * 1024
_ids = itertools.count()
Row = dict[str, Any]


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


@pytest.fixture(scope="module")
def serve(database_url: str | None) -> Iterator[ServeProcess]:
    """A control plane that measures running instances every half second."""
    with running_server(database_url=database_url, env={"PF_DISK_USAGE_INTERVAL_S": "0.5"}) as srv:
        yield srv


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


def running(api: httpx.Client, name: str) -> Row:
    assert api.post("/api/instances", json={"name": name}).status_code == 201
    started = api.post(f"/api/instances/{name}/start")
    assert started.status_code == 200, started.text
    row: Row = started.json()
    assert row["status"] == "running", row
    return row


def wait_for(api: httpx.Client, name: str, check: Callable[[Row], bool], what: str) -> Row:
    deadline = time.monotonic() + 60
    while True:
        row: Row = api.get(f"/api/instances/{name}").json()
        if check(row):
            return row
        assert time.monotonic() < deadline, f"{name} never became {what}: {row}"
        time.sleep(0.2)


def measured_since(api: httpx.Client, name: str, since: datetime) -> Row:
    """The instance once a measurement newer than `since` is stored."""
    return wait_for(
        api,
        name,
        lambda r: (
            r["disk_measured"] is not None and datetime.fromisoformat(r["disk_measured"]) > since
        ),
        "measured again",
    )


def page(serve: ServeProcess, api: httpx.Client, path: str) -> httpx.Response:
    """A dashboard page as the owner of `api`'s session sees it."""
    token = api.headers["Authorization"].removeprefix("Bearer ")
    with serve.client(cookies={"pf_session": token}) as browser:
        return browser.get(path)


def now() -> datetime:
    return datetime.now().astimezone()


def folder_of(serve: ServeProcess, row: Row) -> Path:
    return serve.data_dir / "instances" / row["id"]


def write(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.write(b"x" * size)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def test_usage_is_measured_without_following_links_sparse_by_blocks_hard_links_once(
    serve: ServeProcess, tenant: httpx.Client
) -> None:
    name = unique("measured")
    row = running(tenant, name)
    first = measured_since(tenant, name, datetime.fromisoformat(row["created"]))
    assert first["disk_bytes"] > 0
    assert first["disk_limit_mb"] == 1024 and first["disk_state"] == "ok"
    assert first["max_processes"] == 256

    folder = folder_of(serve, row)
    outside = write(serve.data_dir.parent / f"{name}-elsewhere.bin", 64 * MiB)
    public = folder / "pb_public"
    (public / "stolen.bin").symlink_to(outside)  # another tenant's data, say
    (public / "root").symlink_to("/")
    with (public / "sparse.bin").open("wb") as handle:  # 2 GiB long: over the quota by size
        handle.truncate(2048 * MiB)
        handle.write(b"s" * MiB)
    linked = write(public / "linked-0", 8 * MiB)
    for n in (1, 2, 3):
        os.link(linked, public / f"linked-{n}")
    written = now()

    after = measured_since(tenant, name, written)
    # the links and the file outside are not counted, the sparse file by its 1 MiB, the
    # hard-linked one once; PocketBase itself may write a little meanwhile
    assert first["disk_bytes"] + 9 * MiB <= after["disk_bytes"] < first["disk_bytes"] + 12 * MiB
    assert after["status"] == "running" and after["disk_state"] == "ok"
    outside.unlink()


def test_over_its_quota_an_instance_is_stopped_refused_a_start_and_starts_once_under(
    serve: ServeProcess, operator: httpx.Client, tenant: httpx.Client
) -> None:
    name = unique("quota")
    row = running(tenant, name)
    base = measured_since(tenant, name, datetime.fromisoformat(row["created"]))["disk_bytes"]
    limit_mb = base // MiB + 6
    changed = operator.patch(f"/api/fleet/instances/{name}", json={"disk_limit_mb": limit_mb})
    assert changed.status_code == 200, changed.text
    assert changed.json()["disk_limit_mb_override"] == limit_mb
    assert changed.json()["status"] == "running"

    big = write(folder_of(serve, row) / "pb_public" / "big.bin", 10 * MiB)
    stopped = wait_for(tenant, name, lambda r: r["status"] == "stopped", "stopped")
    assert stopped["status_reason"].startswith("over its disk quota: ")
    assert stopped["status_reason"].endswith(f" of {limit_mb} MB")
    assert stopped["disk_state"] == "over"
    assert stopped["desired"] == "stopped"
    assert serve.instance_client(name).get("/api/health").status_code != 200

    refused = tenant.post(f"/api/instances/{name}/start")
    assert refused.status_code == 409, refused.text
    assert "over its disk quota" in refused.json()["detail"]
    assert tenant.get(f"/api/instances/{name}").json()["status"] == "stopped"

    # the dashboard says why, on the instance's page and on the fleet page
    shown = page(serve, tenant, f"/instances/{name}")
    assert shown.status_code == 200
    assert "over its disk quota" in shown.text and 'class="disk-over"' in shown.text
    assert "over quota" in page(serve, operator, "/fleet").text

    big.unlink()  # under the quota again: the start goes ahead
    restarted = tenant.post(f"/api/instances/{name}/start")
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["status"] == "running"
    assert restarted.json()["disk_state"] in ("ok", "warning")

    # over again, then the operator lifts the quota: it may start
    write(folder_of(serve, row) / "pb_public" / "big.bin", 10 * MiB)
    wait_for(tenant, name, lambda r: r["status"] == "stopped", "stopped again")
    lifted = operator.patch(f"/api/fleet/instances/{name}", json={"disk_limit_mb": 0})
    assert lifted.status_code == 200 and lifted.json()["disk_limit_mb"] is None
    assert lifted.json()["disk_state"] == "ok"
    assert tenant.post(f"/api/instances/{name}/start").json()["status"] == "running"


def test_a_limit_lowered_under_the_usage_stops_the_instance_at_once(
    serve: ServeProcess, operator: httpx.Client, tenant: httpx.Client
) -> None:
    name = unique("lowered")
    row = running(tenant, name)
    write(folder_of(serve, row) / "pb_public" / "big.bin", 3 * MiB)
    lowered = operator.patch(f"/api/fleet/instances/{name}", json={"disk_limit_mb": 2})
    assert lowered.status_code == 200, lowered.text
    body = lowered.json()
    assert body["status"] == "stopped", body
    assert body["status_reason"].startswith("over its disk quota: ")
    assert body["status_reason"].endswith(" of 2 MB")
    back = operator.patch(f"/api/fleet/instances/{name}", json={"disk_limit_mb": None})
    assert back.json()["disk_limit_mb"] == 1024 and back.json()["disk_limit_mb_override"] is None
    assert tenant.post(f"/api/instances/{name}/start").json()["status"] == "running"


def test_the_warning_threshold_is_shown(
    serve: ServeProcess, operator: httpx.Client, tenant: httpx.Client
) -> None:
    name = unique("warned")
    row = running(tenant, name)
    write(folder_of(serve, row) / "pb_public" / "big.bin", 40 * MiB)
    used = measured_since(tenant, name, now())["disk_bytes"]
    limit_mb = int(used / MiB / 0.95) + 1  # usage at 90-95 % of it
    changed = operator.patch(f"/api/fleet/instances/{name}", json={"disk_limit_mb": limit_mb})
    assert changed.json()["disk_state"] == "warning", changed.json()
    assert changed.json()["status"] == "running"
    shown = page(serve, tenant, f"/instances/{name}").text
    assert "of its disk quota" in shown and 'class="disk-warning"' in shown


def test_an_operator_overrides_the_process_limit_and_the_instance_restarts_with_it(
    operator: httpx.Client, tenant: httpx.Client
) -> None:
    name = unique("procs")
    running(tenant, name)
    changed = operator.patch(f"/api/fleet/instances/{name}", json={"max_processes": 64})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["max_processes"] == 64 and body["max_processes_override"] == 64
    assert body["status"] == "running"
    assert tenant.get(f"/api/instances/{name}").json()["max_processes"] == 64
    limits = Path(f"/proc/{body['pid']}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max processes"))
    assert line.split()[2:4] == ["64", "64"], line
    shown = operator.get(f"/api/fleet/instances/{name}").json()
    assert shown["max_processes"] == 64
    reset = operator.patch(f"/api/fleet/instances/{name}", json={"max_processes": None})
    assert reset.json()["max_processes"] == 256 and reset.json()["max_processes_override"] is None


def test_owners_may_not_set_their_own_limits(tenant: httpx.Client) -> None:
    name = unique("mine")
    running(tenant, name)
    for body in ({"max_processes": 100000}, {"disk_limit_mb": 0}):
        refused = tenant.patch(f"/api/fleet/instances/{name}", json=body)
        assert refused.status_code == 403, refused.text
    assert tenant.get(f"/api/fleet/instances/{name}").status_code == 403
    row = tenant.get(f"/api/instances/{name}").json()
    assert row["max_processes"] == 256 and row["disk_limit_mb"] == 1024
    # nor through the owner's own update
    tenant.patch(f"/api/instances/{name}", json={"disk_limit_mb": 0, "max_processes": 9999})
    row = tenant.get(f"/api/instances/{name}").json()
    assert row["max_processes"] == 256 and row["disk_limit_mb"] == 1024


@pytest.mark.parametrize(
    "body",
    [
        {"max_processes": -1},
        {"max_processes": 0},
        {"max_processes": 15},
        {"max_processes": 10**9},
        {"max_processes": "many"},
        {"disk_limit_mb": -5},
        {"disk_limit_mb": 10**12},
        {"disk_limit_mb": 1.5},
        {"cpu": 5},
        {},
    ],
)
def test_bad_limits_are_refused_with_422(
    operator: httpx.Client, tenant: httpx.Client, body: dict[str, object]
) -> None:
    name = unique("bad")
    assert tenant.post("/api/instances", json={"name": name}).status_code == 201
    refused = operator.patch(f"/api/fleet/instances/{name}", json=body)
    assert refused.status_code == 422, refused.text
    shown = operator.get(f"/api/fleet/instances/{name}").json()
    assert shown["max_processes_override"] is None and shown["disk_limit_mb_override"] is None


def test_limits_of_an_unknown_instance_are_404(operator: httpx.Client) -> None:
    assert operator.patch("/api/fleet/instances/nope", json={"disk_limit_mb": 5}).status_code == 404
    assert operator.get("/api/fleet/instances/nope").status_code == 404


def test_the_cli_shows_and_sets_limits(
    serve: ServeProcess, operator: httpx.Client, tenant: httpx.Client
) -> None:
    name = unique("cli")
    running(tenant, name)
    token = operator.headers["Authorization"].removeprefix("Bearer ")
    env = {**serve.env(), "PF_URL": serve.url, "PF_TOKEN": token, "COLUMNS": "250"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "pocketfleet"), *args], env=env, capture_output=True, text=True
        )

    shown = cli("fleet", "limits", name)
    assert shown.returncode == 0, shown.stderr
    assert "processes: 256 (fleet default)" in shown.stdout
    assert "disk quota: 1024 MB (fleet default)" in shown.stdout
    changed = cli("fleet", "limits", name, "--processes", "128", "--disk-mb", "2048")
    assert changed.returncode == 0, changed.stderr
    assert "processes: 128 (this instance)" in changed.stdout
    assert "disk quota: 2048 MB (this instance)" in changed.stdout
    assert cli("fleet", "limits", name, "--disk-mb", "default").returncode == 0
    assert operator.get(f"/api/fleet/instances/{name}").json()["disk_limit_mb"] == 1024
    bad = cli("fleet", "limits", name, "--processes", "-3")
    assert bad.returncode == 1 and "422" in bad.stderr
    listed = cli("fleet", "ls")
    assert listed.returncode == 0 and " / 1024 MB" in listed.stdout.replace("\n", " ")
