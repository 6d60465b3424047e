"""Event hooks of the runtime's app seen through its HTTP API (in process, through the whole
request pipeline): model hooks inside the transaction, success events after the commit, request
hooks around the operation, auth and settings events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from instance_runtime.core.app import App
from instance_runtime.core.auth import upsert_superuser
from instance_runtime.core.errors import ApiError
from instance_runtime.core.events import (
    CollectionSuccessEvent,
    MailerEvent,
    RecordAuthRefreshRequestEvent,
    RecordAuthRequestEvent,
    RecordAuthWithPasswordRequestEvent,
    RecordEvent,
    RecordRequestEvent,
    RecordsListRequestEvent,
    RecordSuccessEvent,
    SettingsReloadEvent,
)
from instance_runtime.server import create_app

EMAIL, PASSWORD = "hooks@example.com", "hooks-pass-1234"
Scenario = Callable[[httpx.AsyncClient, App], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    async def main() -> None:
        asgi = create_app(tmp_path / "pb_data")
        app: App = asgi.state.runtime
        app.write_sync(lambda conn, schema: upsert_superuser(conn, schema, EMAIL, PASSWORD))
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://hooks") as client:
            login = await client.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": EMAIL, "password": PASSWORD},
            )
            client.headers["Authorization"] = login.json()["token"]
            created = await client.post(
                "/api/collections",
                json={"name": "notes", "type": "base", "createRule": "", "listRule": "",
                      "fields": [{"name": "title", "type": "text"}]},
            )  # fmt: skip
            assert created.status_code == 200, created.text
            await scenario(client, app)
        app.close()

    asyncio.run(main())


async def _titles(client: httpx.AsyncClient) -> list[str]:
    listed = await client.get("/api/collections/notes/records", params={"sort": "title"})
    return [item["title"] for item in listed.json()["items"]]


def test_a_model_hook_changes_the_record_before_it_is_validated_and_saved(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        def shout(e: RecordEvent) -> Any:
            e.record["title"] = str(e.record["title"]).upper()
            return e.next()

        app.hooks.on_record_create.on("notes").bind(shout)
        app.hooks.on_record_create.on("other").bind(lambda e: None)  # never runs for notes
        answer = await client.post("/api/collections/notes/records", json={"title": "quiet"})
        assert answer.json()["title"] == "QUIET"
        assert await _titles(client) == ["QUIET"]

    run(tmp_path, scenario)


def test_a_hook_that_raises_refuses_the_write_and_leaves_nothing(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        def refuse(e: RecordEvent) -> Any:
            e.next()  # saved inside the transaction ...
            raise ApiError(400, "Refused by a hook.")  # ... and rolled back

        committed: list[str] = []
        app.hooks.on_record_create.bind(refuse)
        app.hooks.on_record_after_create_success.bind(
            lambda e: committed.append(e.record["title"]) or e.next()
        )
        answer = await client.post("/api/collections/notes/records", json={"title": "gone"})
        assert answer.status_code == 400
        assert answer.json()["message"] == "Refused by a hook."
        assert await _titles(client) == [] and committed == []

    run(tmp_path, scenario)


def test_a_validate_hook_adds_its_own_field_errors(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        def no_spam(e: RecordEvent) -> Any:
            if "spam" in str(e.record["title"]):
                raise ApiError(400, "Failed to create record.", {"title": {"code": "spam"}})
            return e.next()

        app.hooks.on_record_validate.bind(no_spam)
        answer = await client.post("/api/collections/notes/records", json={"title": "spam!"})
        assert answer.status_code == 400 and answer.json()["data"] == {"title": {"code": "spam"}}
        ok = await client.post("/api/collections/notes/records", json={"title": "ham"})
        assert ok.status_code == 200

    run(tmp_path, scenario)


def test_success_events_come_after_the_commit_and_not_for_a_failed_batch(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        seen: list[tuple[str, str, list[str]]] = []

        def record(e: RecordSuccessEvent) -> Any:
            rows = app.db.read_sync(
                lambda conn: [r[0] for r in conn.execute("SELECT title FROM notes ORDER BY 1")]
            )
            seen.append((e.action, e.record["title"], rows))
            return e.next()

        for hook in (
            app.hooks.on_record_after_create_success,
            app.hooks.on_record_after_update_success,
            app.hooks.on_record_after_delete_success,
        ):
            hook.bind(record)
        made = (await client.post("/api/collections/notes/records", json={"title": "a"})).json()
        await client.patch(f"/api/collections/notes/records/{made['id']}", json={"title": "b"})
        await client.delete(f"/api/collections/notes/records/{made['id']}")
        assert seen == [("create", "a", ["a"]), ("update", "b", ["b"]), ("delete", "b", [])]
        await client.patch("/api/settings", json={"batch": {"enabled": True}})
        failed = await client.post(
            "/api/batch",
            json={"requests": [
                {"method": "POST", "url": "/api/collections/notes/records", "body": {"title": "c"}},
                {"method": "PATCH", "url": "/api/collections/notes/records/missing", "body": {}},
            ]},
        )  # fmt: skip
        assert failed.status_code == 400
        assert len(seen) == 3, "nothing was committed, so nothing is announced"

    run(tmp_path, scenario)


def test_request_hooks_wrap_the_operation_and_may_change_the_answer(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        async def default_title(e: RecordRequestEvent) -> Any:
            e.body.setdefault("title", "untitled")
            await e.next()
            assert e.record is not None
            e.record["seenByHook"] = True

        async def count(e: RecordsListRequestEvent) -> Any:
            await e.next()
            assert e.result is not None
            e.result["hooked"] = len(e.result["items"])

        app.hooks.on_record_create_request.bind(default_title)
        app.hooks.on_records_list_request.on("notes").bind(count)
        made = (await client.post("/api/collections/notes/records", json={})).json()
        assert made["title"] == "untitled" and made["seenByHook"] is True
        listed = (await client.get("/api/collections/notes/records")).json()
        assert listed["hooked"] == 1

    run(tmp_path, scenario)


def test_auth_and_settings_events(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        methods: list[str] = []
        reloaded: list[str] = []

        async def on_auth(e: RecordAuthRequestEvent) -> Any:
            methods.append(e.auth_method)
            e.meta = {"hooked": True}
            return await e.next()

        app.hooks.on_record_auth_request.bind(on_auth)
        app.hooks.on_settings_reload.bind(
            lambda e: reloaded.append(e.settings["meta"]["appName"]) or e.next()
        )
        refreshed = await client.post("/api/collections/_superusers/auth-refresh")
        assert refreshed.json()["meta"] == {"hooked": True}
        await client.patch("/api/settings", json={"meta": {"appName": "Hooked"}})
        assert methods == ["refresh"] and reloaded == ["Hooked"]
        assert isinstance(SettingsReloadEvent({}), SettingsReloadEvent)

    run(tmp_path, scenario)


@pytest.fixture(autouse=True)
def _no_leftover_loop() -> AsyncIterator[None] | None:
    return None


def test_the_request_log_keeps_pocketbase_entries_and_skips_what_it_skips(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        await client.get("/api/collections/notes/records?perPage=1", headers={"Referer": "r"})
        await client.get("/api/collections/missing/records")
        await client.get("/api/oauth2-redirect?code=secret-code&state=nobody")
        failed, listed = app.request_log.recent(2)  # newest first; the redirect is not there
        assert "secret-code" not in str(app.request_log.recent(100)), "a redirect is not logged"
        assert listed["message"] == "GET /api/collections/notes/records?perPage=1"
        assert listed["level"] == 0 and failed["level"] == 8 and failed["data"]["status"] == 404
        data = listed["data"]
        assert (data["type"], data["method"], data["status"], data["referer"]) == (
            "request", "GET", 200, "r",
        )  # fmt: skip
        assert data["auth"] == "_superusers" and "authId" not in data and "userIP" in data
        await client.patch("/api/settings", json={"logs": {"logIP": False, "logAuthId": True}})
        await client.get("/api/health")
        data = app.request_log.recent(1)[0]["data"]
        assert "userIP" not in data and data["authId"]
        await client.patch("/api/settings", json={"logs": {"maxDays": 0}})
        before = len(app.request_log.recent(1000))
        await client.get("/api/health")
        assert len(app.request_log.recent(1000)) == before, "maxDays 0 logs nothing"

    run(tmp_path, scenario)


def test_collection_changes_are_announced_after_their_commit(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        seen: list[tuple[str, str]] = []

        def note(e: CollectionSuccessEvent) -> Any:
            seen.append((e.action, e.collection.name))
            return e.next()

        for hook in (
            app.hooks.on_collection_after_create_success,
            app.hooks.on_collection_after_update_success,
            app.hooks.on_collection_after_delete_success,
        ):
            hook.bind(note)
        await client.post("/api/collections", json={"name": "tags", "type": "base"})
        await client.patch("/api/collections/tags", json={"listRule": ""})
        refused = await client.post("/api/collections", json={"name": "tags", "type": "base"})
        assert refused.status_code == 400
        await client.delete("/api/collections/tags")
        assert seen == [("create", "tags"), ("update", "tags"), ("delete", "tags")]

    run(tmp_path, scenario)


def test_mail_passes_on_mailer_send_with_what_it_is_about(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        seen: list[tuple[str, str, str, str]] = []

        def drop(e: MailerEvent) -> Any:
            assert e.collection is not None and e.record is not None
            seen.append((e.kind, e.collection.name, e.record["email"], e.message.subject))
            return None  # not calling next(): the message is dropped

        app.hooks.on_mailer_send.bind(drop)
        user = {"email": "m@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD}
        assert (await client.post("/api/collections/users/records", json=user)).status_code == 200
        asked = await client.post(
            "/api/collections/users/request-verification", json={"email": "m@example.com"}
        )
        assert asked.status_code == 204
        assert await asyncio.to_thread(app.mailer.flush, 10.0)
        assert seen == [("verification", "users", "m@example.com", "Verify your Acme email")]

    run(tmp_path, scenario)


def test_auth_with_password_and_refresh_have_their_own_hooks(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        seen: list[tuple[str, bool]] = []

        async def only_known(e: RecordAuthWithPasswordRequestEvent) -> Any:
            seen.append((e.identity, e.record is not None))
            if e.identity.startswith("blocked"):
                raise ApiError(403, "Blocked by a hook.")
            return await e.next()

        async def count(e: RecordAuthRefreshRequestEvent) -> Any:
            await e.next()
            assert e.answer is not None
            e.answer["refreshedByHook"] = True

        app.hooks.on_record_auth_with_password_request.on("users").bind(only_known)
        app.hooks.on_record_auth_refresh_request.bind(count)
        for email in ("ok@example.com", "blocked@example.com"):
            made = {"email": email, "password": PASSWORD, "passwordConfirm": PASSWORD}
            await client.post("/api/collections/users/records", json=made)

        async def login(identity: str) -> httpx.Response:
            body = {"identity": identity, "password": PASSWORD}
            return await client.post("/api/collections/users/auth-with-password", json=body)

        ok, blocked, unknown = [
            await login(i) for i in ("ok@example.com", "blocked@example.com", "no@example.com")
        ]
        assert ok.status_code == 200 and blocked.status_code == 403
        assert unknown.status_code == 400
        assert seen == [
            ("ok@example.com", True),
            ("blocked@example.com", True),
            ("no@example.com", False),
        ]
        refreshed = await client.post(
            "/api/collections/users/auth-refresh",
            headers={"Authorization": ok.json()["token"]},
        )
        assert refreshed.json()["refreshedByHook"] is True

    run(tmp_path, scenario)
