"""Python hooks of a `pocketfleet` instance end to end through the control plane: hook files
written into the instance's `pb_hooks/` with the files API (no deploy, no restart) answer
through the embedded proxy: a route, a record hook that changes a field and one that refuses,
a cron job that writes a record, a reload on change, a broken file that leaves the rest
working — in the instance's own process and sandbox, which sees its `pb_hooks/`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import ServeProcess, running_server, sign_up

EMAIL = "hooks-owner@example.com"
SUPERUSER_PASSWORD = "superuser-pass-1"

HOOK_V1 = b"""
from instance_runtime.hooks import BadRequestError, RecordEvent, RequestEvent, app


@app.route("GET", "/api/hello/{name}")
async def hello(e: RequestEvent) -> dict[str, str]:
    return {"message": f"Hello {e.path_param('name')}!", "version": "one"}


@app.on_record_create("notes")
def check(e: RecordEvent) -> None:
    if e.record.get("title") == "no":
        raise BadRequestError("No is not a title.")
    e.record["title"] = str(e.record.get("title", "")).title()
    e.next()


@app.cron("*/10 * * * *", id="note_tick")
async def note_tick() -> None:
    await app.records.create("notes", {"title": "written by cron"})
"""
HOOK_V2 = HOOK_V1.replace(b'"version": "one"', b'"version": "two"')
BROKEN = b"import this_module_does_not_exist\n"


def _poll(get: Callable[[], httpx.Response], check: Callable[[httpx.Response], bool]) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            response = get()
            if check(response):
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    # the venv's interpreter may live where instance uids cannot read it (see test_pocketfleet)
    with running_server(env={"PF_INSTANCE_USERS": "false"}) as server:
        yield server


def test_hooks_written_through_the_files_api_answer_through_the_proxy(serve: ServeProcess) -> None:
    api = serve.client()
    api.headers["Authorization"] = f"Bearer {sign_up(api, EMAIL)}"
    created = api.post(
        "/api/instances",
        json={"name": "pyhooks", "engine": "pocketfleet", "superuser_password": SUPERUSER_PASSWORD},
    )
    assert created.status_code == 201, created.text
    _poll(lambda: api.get("/api/instances/pyhooks"), lambda r: r.json()["status"] == "running")
    started = api.get("/api/instances/pyhooks").json()["started"]

    with serve.instance_client("pyhooks") as pb:
        auth = pb.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": SUPERUSER_PASSWORD},
        )
        assert auth.status_code == 200, auth.text
        su = {"Authorization": auth.json()["token"]}
        made = pb.post("/api/collections", headers=su, json={
            "name": "notes", "type": "base", "createRule": "", "listRule": "",
            "fields": [{"name": "title", "type": "text"}],
        })  # fmt: skip
        assert made.status_code == 200, made.text

        put = api.put("/api/instances/pyhooks/files/pb_hooks/main.py", content=HOOK_V1)
        assert put.status_code == 201, put.text
        hello = _poll(lambda: pb.get("/api/hello/ann"), lambda r: r.status_code == 200)
        assert hello.json() == {"message": "Hello ann!", "version": "one"}

        note = pb.post("/api/collections/notes/records", json={"title": "hello there"})
        assert note.status_code == 200 and note.json()["title"] == "Hello There", note.text
        refused = pb.post("/api/collections/notes/records", json={"title": "no"})
        assert refused.status_code == 400
        assert refused.json() == {"data": {}, "message": "No is not a title.", "status": 400}

        jobs = [job["id"] for job in pb.get("/api/crons", headers=su).json()]
        assert "note_tick" in jobs
        assert pb.post("/api/crons/note_tick", headers=su).status_code == 204
        _poll(
            lambda: pb.get("/api/collections/notes/records"),
            lambda r: "Written By Cron" in [i["title"] for i in r.json()["items"]],
        )

        # a broken file beside it is reported and changes nothing else; an edit is reloaded
        put = api.put("/api/instances/pyhooks/files/pb_hooks/broken.py", content=BROKEN)
        assert put.status_code == 201, put.text
        put = api.put("/api/instances/pyhooks/files/pb_hooks/main.py", content=HOOK_V2)
        assert put.status_code == 200, put.text
        hello = _poll(lambda: pb.get("/api/hello/bo"), lambda r: r.json().get("version") == "two")
        assert hello.json()["message"] == "Hello bo!"

    row = api.get("/api/instances/pyhooks").json()
    assert row["status"] == "running" and row["started"] == started  # reloaded in place
    logs = api.get("/api/instances/pyhooks/logs", params={"tail": 400})
    assert logs.status_code == 200, logs.text
    assert "pb_hooks/broken.py failed to load" in logs.text
    assert "this_module_does_not_exist" in logs.text
