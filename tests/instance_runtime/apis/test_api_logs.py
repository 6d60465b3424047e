"""`/api/logs` of a real runtime process: the request log written by earlier requests (in
batches, so the tests poll), searched, viewed, counted per hour and emptied as PocketBase does,
the `settings.logs` options honoured, and the log kept in `pb_data/auxiliary.db` across a
restart. (Shapes against PocketBase: tests/conformance/test_conformance_logs.py.)"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess

USER_EMAIL, USER_PASSWORD = "logs-user@example.com", "logs-user-pass-1"
ENTRY_KEYS = ["id", "created", "data", "message", "level"]


def wait_logs(su: httpx.Client, filter: str, count: int = 1, timeout: float = 10) -> list[Any]:
    """The entries matching `filter`, once there are at least `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        response = su.get("/api/logs", params={"filter": filter, "perPage": 500})
        assert response.status_code == 200, response.text
        items: list[Any] = response.json()["items"]
        if len(items) >= count:
            return items
        assert time.monotonic() < deadline, f"{len(items)} of {count} entries for {filter!r}"
        time.sleep(0.1)


def tag() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def su(runtime: RuntimeProcess) -> Iterator[httpx.Client]:
    """The superuser's client; the log settings a test changed are put back after it."""
    client = runtime.client(superuser=True)
    before = client.get("/api/settings").json()["logs"]
    yield client
    assert client.patch("/api/settings", json={"logs": before}).status_code == 200


def test_only_superusers_read_the_log(runtime: RuntimeProcess, su: httpx.Client) -> None:
    created = su.post(
        "/api/collections/users/records",
        json={"email": USER_EMAIL, "password": USER_PASSWORD, "passwordConfirm": USER_PASSWORD},
    )
    assert created.status_code == 200, created.text
    auth = runtime.client().post(
        "/api/collections/users/auth-with-password",
        json={"identity": USER_EMAIL, "password": USER_PASSWORD},
    )
    user = runtime.client(token=auth.json()["token"])
    for path in ("/api/logs", "/api/logs/stats", "/api/logs/whatever"):
        guest = runtime.client().get(path)
        assert (guest.status_code, guest.json()["message"]) == (
            401, "The request requires valid record authorization token.",
        )  # fmt: skip
        assert user.get(path).status_code == 403
    assert runtime.client().delete("/api/logs").status_code == 401
    assert user.delete("/api/logs").status_code == 403


def test_requests_are_logged_as_pocketbase_and_searched(su: httpx.Client) -> None:
    mark = tag()
    httpx.get(
        f"{su.base_url}/api/health?mark={mark}",
        headers={"Referer": "https://ref.example", "User-Agent": "logs-test/1"},
    )
    su.get(f"/api/nope/{mark}")
    su.post("/api/collections", json={"name": "", "note": mark})
    entries = wait_logs(su, f"message ~ '{mark}'", 2)
    health, missing = entries
    assert list(health) == ENTRY_KEYS and len(health["id"]) == 15
    assert health["message"] == f"GET /api/health?mark={mark}" and health["level"] == 0
    data = health["data"]
    assert list(data) == sorted(data), "data keys sorted, as PocketBase stores them"
    assert {k: data[k] for k in ("type", "method", "status", "url", "referer", "userAgent")} == {
        "type": "request", "method": "GET", "status": 200, "url": f"/api/health?mark={mark}",
        "referer": "https://ref.example", "userAgent": "logs-test/1",
    }  # fmt: skip
    assert data["auth"] == "" and data["userIP"] == data["remoteIP"] == "127.0.0.1"
    assert isinstance(data["execTime"], float) and "authId" not in data
    assert missing["level"] == 8 and missing["data"]["status"] == 404
    assert missing["data"]["auth"] == "_superusers"
    assert missing["data"]["error"] == "File not found."  # an unknown route, as PocketBase
    assert missing["data"]["details"] is None
    failed = wait_logs(su, "message = 'POST /api/collections' && data.status = 400")[-1]
    assert failed["data"]["error"] == "Failed to create collection."
    assert failed["data"]["details"]["name"] == "cannot be blank"

    by_status = su.get("/api/logs", params={"filter": f"data.url ~ '{mark}' && data.status >= 400"})
    assert [i["id"] for i in by_status.json()["items"]] == [missing["id"]]
    newest = su.get("/api/logs", params={"sort": "-@rowid", "perPage": 1, "skipTotal": True})
    body = newest.json()
    assert (body["page"], body["perPage"], body["totalItems"], body["totalPages"]) == (1, 1, -1, -1)
    assert len(body["items"]) == 1
    counted = su.get("/api/logs", params={"filter": f"message ~ '{mark}'", "perPage": 1}).json()
    assert (counted["totalItems"], counted["totalPages"], len(counted["items"])) == (2, 2, 1)
    picked = su.get(
        "/api/logs", params={"filter": f"id = '{health['id']}'", "fields": "id,data.status"}
    )
    assert picked.json()["items"] == [{"id": health["id"], "data": {"status": 200}}]
    for query in ({"filter": "nope = 1"}, {"filter": "data.status =="}, {"sort": "nope"},
                  {"page": "x"}):  # fmt: skip
        bad = su.get("/api/logs", params=query)
        assert (bad.status_code, bad.json()) == (400, {
            "data": {}, "message": "Something went wrong while processing your request.",
            "status": 400,
        }), query  # fmt: skip


def test_view_stats_and_what_is_not_logged(su: httpx.Client) -> None:
    mark = tag()
    su.get(f"/api/nope/{mark}")
    (entry,) = wait_logs(su, f"message ~ '{mark}'")
    viewed = su.get(f"/api/logs/{entry['id']}")
    assert viewed.status_code == 200 and viewed.json() == entry
    assert su.get(f"/api/logs/{entry['id']}?fields=message").json() == {"message": entry["message"]}
    missing = su.get("/api/logs/missing-id")
    assert (missing.status_code, missing.json()) == (404, {
        "data": {}, "message": "The requested resource wasn't found.", "status": 404,
    })  # fmt: skip

    stats = su.get("/api/logs/stats").json()
    assert stats and all(list(s) == ["date", "total"] for s in stats)
    assert [s["date"] for s in stats] == sorted(s["date"] for s in stats)
    assert stats[-1]["date"].endswith(":00:00.000Z") and stats[-1]["total"] >= 1
    one = su.get("/api/logs/stats", params={"filter": f"message ~ '{mark}'"}).json()
    assert one == [{"date": entry["created"][:13] + ":00:00.000Z", "total": 1}]
    bad = su.get("/api/logs/stats", params={"filter": "nope = 1"})
    assert (bad.status_code, bad.json()["message"]) == (400, "Invalid filter format.")

    # successful /api/logs requests are not logged; failed ones are
    su.get("/api/logs", params={"filter": f"message ~ '{mark}x'"})
    su.get("/api/logs/stats", params={"filter": f"message ~ '{mark}y'"})
    su.get(f"/api/logs/{mark}z")
    (logged,) = wait_logs(su, f"message ~ '{mark}z'")
    assert logged["data"]["status"] == 404
    assert su.get("/api/logs", params={"filter": f"message ~ '{mark}x' || message ~ '{mark}y'"}
                  ).json()["totalItems"] == 0  # fmt: skip


def test_log_settings_are_honoured(runtime: RuntimeProcess, su: httpx.Client) -> None:
    mark = tag()
    su.patch("/api/settings", json={"logs": {"logIP": False, "logAuthId": True}})
    su.get(f"/api/health?a={mark}")
    (entry,) = wait_logs(su, f"message ~ 'a={mark}'")
    assert "userIP" not in entry["data"] and "remoteIP" not in entry["data"]
    assert entry["data"]["authId"] and entry["data"]["auth"] == "_superusers"

    su.patch("/api/settings", json={"logs": {"minLevel": 5}})
    su.get(f"/api/health?b={mark}")
    su.get(f"/api/nope?b={mark}")
    (error,) = wait_logs(su, f"message ~ 'b={mark}'")
    assert error["level"] == 8, "below minLevel nothing is logged"
    assert su.get("/api/logs", params={"filter": "level < 5"}).json()["totalItems"] == 0, (
        "a higher minLevel deletes the entries below it"
    )

    su.patch("/api/settings", json={"logs": {"minLevel": 0, "maxDays": 0}})
    assert su.get("/api/logs").json()["totalItems"] == 0, "maxDays 0 keeps no log"
    su.get(f"/api/health?c={mark}")
    su.get(f"/api/nope?c={mark}")
    time.sleep(1.5)  # longer than a flush interval
    assert su.get("/api/logs").json()["totalItems"] == 0
    assert su.get("/api/settings").json()["logs"]["maxDays"] == 0


def test_delete_empties_the_log_and_keeps_the_settings(su: httpx.Client) -> None:
    mark = tag()
    su.get(f"/api/nope?d={mark}")
    wait_logs(su, f"message ~ 'd={mark}'")
    deleted = su.delete("/api/logs")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert su.get("/api/logs").json()["totalItems"] == 0
    assert su.get("/api/logs/stats").json() == []
    assert su.get("/api/settings").json()["logs"]["maxDays"] == 5
    su.get(f"/api/nope?e={mark}")
    wait_logs(su, f"message ~ 'e={mark}'")


def test_the_log_survives_a_restart_in_auxiliary_db(runtime: RuntimeProcess) -> None:
    mark = tag()
    httpx.get(f"{runtime.url}/api/health?r={mark}")
    runtime.stop()  # SIGTERM right away: close() writes what is queued
    with sqlite3.connect(runtime.data_dir / "auxiliary.db") as conn:
        found = conn.execute("SELECT message FROM _logs WHERE message LIKE ?", (f"%{mark}%",))
        assert [r[0] for r in found] == [f"GET /api/health?r={mark}"]
    runtime.start()
    wait_logs(runtime.client(superuser=True), f"message ~ 'r={mark}'")
