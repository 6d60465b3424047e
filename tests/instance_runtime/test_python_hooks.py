"""Python hooks in a real runtime process (`pb_hooks/*.py`, `instance_runtime.hooks`): model
hooks that change a record or refuse it, request hooks, error hooks, custom routes with path
parameters, auth and rate limits, the record services with their validation and transactions,
the safe HTTP client, and cron jobs listed and run through `/api/crons`."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.instance_runtime.hooks_runtime import (
    HooksRuntime,
    create_collection,
    create_user,
    wait_until,
)

MAIN = """
from instance_runtime.hooks import (
    BadRequestError, RecordErrorEvent, RecordEvent, RecordRequestEvent, RequestEvent, Response,
    ValidationError, app,
)

failures: list[str] = []


@app.on_record_create("notes")
def shout(e: RecordEvent) -> None:
    title = str(e.record.get("title", ""))
    if title == "refuse me":
        raise BadRequestError("Notes cannot say that.", {
            "title": ValidationError("not_allowed", "not this title"),
            "other": "a plain string is not leaked",
        })
    if title == "crash":
        raise RuntimeError("secret detail 42")
    e.record["title"] = title.upper()
    e.next()
    # after next(): the record is written, in the same transaction
    app.tx(e).create("audit", {"note": e.record["id"], "what": "created " + e.record["title"]})


@app.on_record_after_create_error("notes")
def remember(e: RecordErrorEvent) -> None:
    failures.append(f"{e.action}:{e.record.get('title')}:{type(e.error).__name__}")
    e.next()


@app.on_record_create_request("notes")
async def stamp(e: RecordRequestEvent) -> None:
    e.body["origin"] = "request hook"
    await e.next()
    assert e.record is not None
    e.record["seenByHook"] = True


@app.route("GET", "/api/hello/{name}")
async def hello(e: RequestEvent) -> Response:
    who = e.auth["id"] if e.auth else "guest"
    return e.json(200, {"message": f"Hello {e.path_param('name')}!", "auth": who})


@app.route("GET", "/api/files-of/{path...}")
def rest_of_path(e: RequestEvent) -> dict[str, str]:
    return {"path": e.path_param("path")}


@app.route("GET", "/api/mine", require_auth="users")
async def mine(e: RequestEvent) -> Response:
    user = e.require_auth()
    return e.json(200, {"id": user["id"], "collection": e.auth_collection.name})


@app.route("POST", "/api/admin-only", require_superuser=True)
async def admin_only(e: RequestEvent) -> Response:
    return e.json(200, {"body": await e.body()})


@app.route("GET", "/api/failures")
async def list_failures(e: RequestEvent) -> list[str]:
    return failures


@app.route("POST", "/api/make-note")
async def make_note(e: RequestEvent) -> Response:
    body = await e.body()
    note = await app.records.create("notes", body)
    found = await app.records.find_first("notes", "id = {:id}", {"id": note["id"]})
    count = await app.records.count("notes", "title ~ {:t}", {"t": note["title"]})
    return e.json(200, {"note": app.export("notes", note), "found": found is not None,
                        "count": count})


@app.route("POST", "/api/two-notes-then-fail")
async def two_then_fail(e: RequestEvent) -> Response:
    def work(tx):
        tx.create("notes", {"title": "first of two"})
        tx.create("notes", {"title": "second of two"})
        raise BadRequestError("Changed my mind.")

    return e.json(200, await app.transaction(work))


@app.route("GET", "/api/fetch-loopback/{port}")
async def fetch_loopback(e: RequestEvent) -> Response:
    import httpx

    try:
        async with app.http(timeout=3) as client:
            answer = await client.get(f"http://127.0.0.1:{e.path_param('port')}/api/health")
    except httpx.ConnectError as exc:
        return e.json(200, {"refused": True, "error": str(exc)})
    return e.json(200, {"refused": False, "status": answer.status_code})


@app.cron("*/7 * * * *", id="write_tick")
async def write_tick() -> None:
    await app.records.create("notes", {"title": "tick"})


@app.cron("0 4 * * *")
def sync_job() -> None:
    app.transaction_sync(lambda tx: tx.create("notes", {"title": "from a sync job"}))
"""


@pytest.fixture(scope="module")
def rt() -> Iterator[HooksRuntime]:
    with HooksRuntime.started({"main.py": MAIN}) as runtime:
        su = runtime.client(superuser=True)
        create_collection(su, {
            "name": "notes", "type": "base", "listRule": "", "viewRule": "", "createRule": "",
            "fields": [{"name": "title", "type": "text", "required": True},
                       {"name": "origin", "type": "text"}],
        })  # fmt: skip
        create_collection(su, {
            "name": "audit", "type": "base",
            "fields": [{"name": "note", "type": "text"}, {"name": "what", "type": "text"}],
        })  # fmt: skip
        yield runtime


def _titles(rt: HooksRuntime) -> list[str]:
    items = rt.client(superuser=True).get("/api/collections/notes/records?perPage=200").json()
    return [item["title"] for item in items["items"]]


def test_a_model_hook_changes_the_record_and_writes_in_its_transaction(rt: HooksRuntime) -> None:
    made = rt.client().post("/api/collections/notes/records", json={"title": "hello"})
    assert made.status_code == 200, made.text
    note = made.json()
    assert note["title"] == "HELLO"  # changed before it was written
    assert note["origin"] == "request hook"  # the request hook changed the body
    assert note["seenByHook"] is True  # and the answer, after next()
    stored = rt.client(superuser=True).get(f"/api/collections/notes/records/{note['id']}").json()
    assert stored["title"] == "HELLO"
    audit = (
        rt.client(superuser=True)
        .get("/api/collections/audit/records", params={"filter": f"note = '{note['id']}'"})
        .json()
    )
    assert [item["what"] for item in audit["items"]] == ["created HELLO"]


def test_a_model_hook_refuses_with_a_pocketbase_error_and_nothing_is_written(
    rt: HooksRuntime,
) -> None:
    refused = rt.client().post("/api/collections/notes/records", json={"title": "refuse me"})
    assert refused.status_code == 400
    assert refused.json() == {
        "data": {
            "title": {"code": "not_allowed", "message": "Not this title."},
            "other": {"code": "validation_invalid_value", "message": "Invalid value."},
        },
        "message": "Notes cannot say that.",
        "status": 400,
    }
    assert "refuse me" not in _titles(rt) and "REFUSE ME" not in _titles(rt)
    assert "create:refuse me:BadRequestError" in rt.client().get("/api/failures").json()
    assert "hook pb_hooks.main.shout answered 400: Notes cannot say that." in rt.log()


def test_a_hook_that_raises_answers_pocketbases_400_and_its_traceback_is_logged(
    rt: HooksRuntime,
) -> None:
    mark = rt.log_mark()
    crashed = rt.client().post("/api/collections/notes/records", json={"title": "crash"})
    assert crashed.status_code == 400
    assert crashed.json() == {
        "data": {},
        "message": "Something went wrong while processing your request.",
        "status": 400,
    }  # as PocketBase answers a JS hook's `throw new Error(...)`
    assert "secret detail" not in crashed.text
    logged = rt.wait_for_log("secret detail 42", since=mark)
    assert "hook pb_hooks.main.shout failed" in logged
    assert "Traceback" in logged and 'main.py", line' in logged
    assert "CRASH" not in _titles(rt) and "crash" not in _titles(rt)
    # the failure reached the error hook, then the rollback removed the audit row as well
    assert "create:crash:RuntimeError" in rt.client().get("/api/failures").json()
    audit = rt.client(superuser=True).get("/api/collections/audit/records").json()
    assert all("crash" not in item["what"].lower() for item in audit["items"])


def test_a_validation_error_from_the_operation_is_not_the_hooks_failure(rt: HooksRuntime) -> None:
    mark = rt.log_mark()
    blank = rt.client().post("/api/collections/notes/records", json={"title": ""})
    assert blank.status_code == 400
    assert blank.json()["data"] == {
        "title": {"code": "validation_required", "message": "Cannot be blank."}
    }
    failures = rt.client().get("/api/failures").json()
    assert "create::ApiError" in failures  # the error hooks see the validation failure too
    assert "pb_hooks.main.shout" not in rt.log()[mark:]  # passed through next(): not logged


def test_a_route_with_a_path_parameter_and_the_requests_auth(rt: HooksRuntime) -> None:
    guest = rt.client().get("/api/hello/ann")
    assert guest.status_code == 200, guest.text
    assert guest.json() == {"message": "Hello ann!", "auth": "guest"}
    assert guest.headers["content-type"] == "application/json"
    assert guest.headers["x-frame-options"] == "SAMEORIGIN"  # the pipeline's headers
    token = create_user(rt.client(), "route-user@example.com")
    user = rt.client(token=token)
    me = user.get("/api/hello/bob").json()
    assert me["message"] == "Hello bob!" and me["auth"] != "guest"
    assert rt.client().get("/api/files-of/a/b/c.txt").json() == {"path": "a/b/c.txt"}
    # HEAD is a GET without the body, as Starlette serves a GET route
    assert rt.client().head("/api/hello/ann").status_code == 200


def test_a_route_that_requires_auth_refuses_as_pocketbase(rt: HooksRuntime) -> None:
    guest = rt.client().get("/api/mine")
    assert guest.status_code == 401
    assert guest.json()["message"] == "The request requires valid record authorization token."
    superuser = rt.client(superuser=True).get("/api/mine")
    assert superuser.status_code == 403
    assert superuser.json()["message"] == (
        "The authorized record is not allowed to perform this action."
    )
    token = create_user(rt.client(), "mine@example.com")
    mine = rt.client(token=token).get("/api/mine")
    assert mine.status_code == 200 and mine.json()["collection"] == "users", mine.text
    refused = rt.client(token=token).post("/api/admin-only", json={"x": 1})
    assert refused.status_code == 403
    allowed = rt.client(superuser=True).post("/api/admin-only", json={"x": 1})
    assert allowed.json() == {"body": {"x": 1}}


def test_an_unknown_method_or_path_of_a_hook_route_is_pocketbases_404(rt: HooksRuntime) -> None:
    wrong = rt.client().post("/api/hello/ann")
    assert wrong.status_code == 404
    assert wrong.json()["status"] == 404
    assert rt.client().get("/api/hello").status_code == 404


def test_hook_routes_go_through_the_rate_limits(rt: HooksRuntime) -> None:
    su = rt.client(superuser=True)
    limits = {"enabled": True,
              "rules": [{"label": "/api/hello/", "maxRequests": 2, "duration": 60}]}  # fmt: skip
    saved = su.patch("/api/settings", json={"rateLimits": limits})
    assert saved.status_code == 200, saved.text
    try:
        answers = [rt.client().get("/api/hello/rate").status_code for _ in range(3)]
        assert answers == [200, 200, 429]
        assert su.get("/api/hello/rate").status_code == 200  # superusers are never limited
    finally:
        su.patch("/api/settings", json={"rateLimits": {"enabled": False, "rules": []}})


def test_record_services_validate_as_the_api_and_serve_routes(rt: HooksRuntime) -> None:
    made = rt.client().post("/api/make-note", json={"title": "via service"})
    assert made.status_code == 200, made.text
    answer = made.json()
    assert answer["note"]["title"] == "VIA SERVICE"  # through the model hooks too
    assert answer["found"] is True and answer["count"] == 1
    assert answer["note"]["collectionName"] == "notes"
    invalid = rt.client().post("/api/make-note", json={"title": ""})
    assert invalid.status_code == 400
    assert invalid.json()["data"]["title"]["code"] == "validation_required"


def test_a_transaction_that_raises_keeps_nothing(rt: HooksRuntime) -> None:
    failed = rt.client().post("/api/two-notes-then-fail")
    assert failed.status_code == 400 and failed.json()["message"] == "Changed my mind."
    titles = _titles(rt)
    assert "FIRST OF TWO" not in titles and "SECOND OF TWO" not in titles


def test_the_safe_http_client_refuses_loopback(rt: HooksRuntime) -> None:
    answer = rt.client().get(f"/api/fetch-loopback/{rt.port}").json()
    assert answer["refused"] is True
    assert "disallowed" in answer["error"] or "invalid" in answer["error"], answer


def test_cron_jobs_are_listed_and_run_through_the_crons_api(rt: HooksRuntime) -> None:
    su = rt.client(superuser=True)
    listed = su.get("/api/crons").json()
    ours = [job for job in listed if not job["id"].startswith("__pb")]
    assert ours == [
        {"id": "sync_job", "expression": "0 4 * * *"},
        {"id": "write_tick", "expression": "*/7 * * * *"},
    ]
    assert su.post("/api/crons/write_tick").status_code == 204
    assert su.post("/api/crons/sync_job").status_code == 204
    titles = wait_until(lambda: _titles(rt), lambda t: "TICK" in t and "FROM A SYNC JOB" in t)
    assert titles.count("TICK") == 1
    assert rt.client().get("/api/crons").status_code == 401


def test_realtime_clients_see_records_that_hooks_created(rt: HooksRuntime) -> None:
    with (
        httpx.Client(base_url=rt.url, timeout=10) as client,
        client.stream("GET", "/api/realtime") as stream,
    ):
        lines = stream.iter_lines()
        client_id = ""
        for line in lines:
            found = re.match(r'data:\{"clientId":"([^"]+)"', line)
            if found:
                client_id = found.group(1)
                break
        subscribed = client.post(
            "/api/realtime", json={"clientId": client_id, "subscriptions": ["notes"]}
        )
        assert subscribed.status_code == 204, subscribed.text
        assert rt.client().post("/api/make-note", json={"title": "live"}).status_code == 200
        for line in lines:
            if line.startswith("data:") and "LIVE" in line:
                break
