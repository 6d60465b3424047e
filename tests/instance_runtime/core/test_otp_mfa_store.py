"""core.otp and core.mfa over a real App (SQLite in a scratch folder): OTPs stored hashed and
reused past ten, MFA sessions and their refusals, PocketBase's model hooks (a new tokenKey ends
the OTPs, a new password the MFA sessions, a deleted record both), the clean-up of expired and
orphaned rows, and that a real runtime process runs that clean-up when it starts."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from instance_runtime.apis.record_auth_otp import delete_expired
from instance_runtime.core import mfa, otp, record_write, records
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.models import format_datetime
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools import security
from tests.instance_runtime.runtime_process import RuntimeProcess


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    runtime = App(tmp_path / "pb_data", readers=1)
    otp.bind(runtime.hooks)
    mfa.bind(runtime.hooks)
    try:
        yield runtime
    finally:
        runtime.close()


def new_user(app: App, email: str) -> dict[str, Any]:
    def run(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any]:
        users = schema.find("users")
        assert users is not None
        record = {"email": email, "password": security.hash_password("pass-1234567", 4)}
        return record_write.save(conn, schema, users, record, hooks=app.hooks)

    return app.write_sync(run)


def issue(app: App, user: dict[str, Any], password: str = "12345678") -> tuple[str, bool]:
    def run(conn: sqlite3.Connection, schema: Schema) -> tuple[str, bool]:
        users = schema.find("users")
        assert users is not None
        item, created = otp.issue(conn, schema, users, user, password, app.hooks)
        return str(item["id"]), created

    return app.write_sync(run)


def rows(app: App, table: str) -> list[tuple[str, str]]:
    return app.db.read_sync(
        lambda conn: [
            (str(r[0]), str(r[1]))
            for r in conn.execute(f"SELECT id, recordRef FROM {table} ORDER BY id").fetchall()
        ]
    )


def age(app: App, table: str, row_id: str, seconds: int) -> None:
    created = format_datetime(datetime.now(UTC) - timedelta(seconds=seconds))
    app.write_sync(
        lambda conn, schema: conn.execute(
            f"UPDATE {table} SET created = ? WHERE id = ?", (created, row_id)
        )
    )


def test_an_otp_is_stored_hashed_and_reused_past_ten(app: App) -> None:
    ann = new_user(app, "ann@example.com")
    otp_id, created = issue(app, ann, "24681357")
    assert created
    stored = app.db.read_sync(lambda conn: otp.find(conn, app.schema, otp_id))
    assert stored is not None and stored["recordRef"] == ann["id"]
    assert stored["password"] != "24681357" and stored["password"].startswith("$2")
    assert otp.password_matches(stored, "24681357")
    assert not otp.password_matches(stored, "24681358")
    ids = [issue(app, ann)[0] for _ in range(9)]
    again, created = issue(app, ann)
    assert not created and again == ids[-1]
    age(app, "_otps", otp_id, 3600)  # an expired one no longer counts
    _, created = issue(app, ann)
    assert created


def test_mfa_sessions_need_a_different_second_method(app: App) -> None:
    mia = new_user(app, "mia@example.com")
    users = app.schema.find("users")
    assert users is not None
    users.options["mfa"] = {"enabled": True, "duration": 60, "rule": ""}
    info = RequestInfo()

    def check(method: str, mfa_id: str = "") -> mfa.MfaOutcome:
        return app.write_sync(
            lambda conn, schema: mfa.check(
                conn, schema, users, mia, method, mfa_id, info, app.hooks
            )
        )

    assert check("") == mfa.MfaOutcome()  # refresh, impersonation: no MFA
    first = check("password").mfa_id
    assert first and rows(app, "_mfas") == [(first, mia["id"])]
    same = check("password", first).error
    assert same is not None and same.message == "A different authentication method is required."
    unknown = check("otp", "abcdefghijklmno").error
    assert unknown is not None and unknown.message == "Invalid or expired MFA session."
    assert check("otp", first) == mfa.MfaOutcome()
    assert rows(app, "_mfas") == []
    expired = check("password").mfa_id
    age(app, "_mfas", expired, 61)
    refused = check("otp", expired).error
    assert refused is not None and refused.status == 400
    assert rows(app, "_mfas") == []  # deleted although the login was refused
    assert mfa.MfaRequired("x1").to_json() == {"mfaId": "x1"}
    users.options["mfa"]["rule"] = "email = 'someone@example.com'"
    assert check("password") == mfa.MfaOutcome()
    users.options["mfa"]["rule"] = "nope = 1"
    with pytest.raises(ApiError, match="Failed to authenticate"):
        check("password")


def test_record_changes_end_their_otps_and_mfa_sessions(app: App) -> None:
    ann, bob = new_user(app, "ann@example.com"), new_user(app, "bob@example.com")
    ann_otp, _ = issue(app, ann)
    bob_otp, _ = issue(app, bob)
    users = app.schema.find("users")
    assert users is not None

    def session(user: dict[str, Any]) -> str:
        return app.write_sync(
            lambda conn, schema: mfa.check(
                conn, schema, users, user, "password", "", RequestInfo(), app.hooks
            )
        ).mfa_id

    users.options["mfa"] = {"enabled": True, "duration": 60}
    ann_mfa, bob_mfa = session(ann), session(bob)

    def save(record: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
        def run(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any]:
            current = records.find(conn, users, str(record["id"]))
            return record_write.save(conn, schema, users, change, hooks=app.hooks, original=current)

        return app.write_sync(run)

    save(ann, {"name": "Ann"})  # neither tokenKey nor password: nothing ends
    assert {r[0] for r in rows(app, "_otps")} == {ann_otp, bob_otp}
    save(ann, {"tokenKey": security.random_string(50)})
    assert rows(app, "_otps") == [(bob_otp, bob["id"])]
    assert {r[0] for r in rows(app, "_mfas")} == {ann_mfa, bob_mfa}
    save(ann, {"password": security.hash_password("another-pass-1", 4)})
    assert rows(app, "_mfas") == [(bob_mfa, bob["id"])]
    app.write_sync(lambda conn, schema: _delete_as_superuser(conn, schema, str(bob["id"]), app))
    assert rows(app, "_otps") == [] and rows(app, "_mfas") == []


def _delete_as_superuser(conn: sqlite3.Connection, schema: Schema, rid: str, app: App) -> None:
    users = schema.find("users")
    superusers = schema.find("_superusers")
    assert users is not None and superusers is not None
    info = RequestInfo(auth={"id": "su"}, auth_collection=superusers)
    record_write.delete(conn, schema, users, rid, info, hooks=app.hooks)


def test_expired_and_orphaned_rows_are_cleaned_up(app: App) -> None:
    ann = new_user(app, "ann@example.com")
    fresh, _ = issue(app, ann)
    old, _ = issue(app, ann)
    age(app, "_otps", old, 181)  # users' otp.duration: 180 s
    users = app.schema.find("users")
    assert users is not None
    users.options["mfa"] = {"enabled": True, "duration": 600}

    def session() -> str:
        return app.write_sync(
            lambda conn, schema: mfa.check(
                conn, schema, users, ann, "password", "", RequestInfo(), app.hooks
            )
        ).mfa_id

    live, stale = session(), session()
    age(app, "_mfas", live, 500)
    age(app, "_mfas", stale, 601)
    now = format_datetime(datetime.now(UTC))
    app.write_sync(
        lambda conn, schema: conn.executemany(
            "INSERT INTO _otps (id, collectionRef, recordRef, password, sentTo, created, updated) "
            "VALUES (?, ?, ?, '', '', ?, ?)",
            [
                ("orphanrecord001", users.id, "nosuchrecord000", now, now),
                ("orphancollect01", "pbc_gone", str(ann["id"]), now, now),
            ],
        )
    )
    assert app.write_sync(delete_expired) == 4
    assert rows(app, "_otps") == [(fresh, ann["id"])]
    assert rows(app, "_mfas") == [(live, ann["id"])]
    assert app.write_sync(delete_expired) == 0


def test_the_runtime_cleans_up_when_it_starts(tmp_path: Path) -> None:
    runtime = RuntimeProcess(tmp_path)
    runtime.upsert_superuser()
    app = App(runtime.data_dir, readers=1)
    try:
        ann = new_user(app, "ann@example.com")
        expired, _ = issue(app, ann)
        kept, _ = issue(app, ann)
        age(app, "_otps", expired, 3600)
    finally:
        app.close()
    runtime.start()
    try:
        client = runtime.client(superuser=True)
        deadline = time.monotonic() + 10
        while True:
            found = client.get("/api/collections/_otps/records").json()
            ids = [item["id"] for item in found["items"]]
            if ids == [kept] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert ids == [kept]
        assert httpx.get(f"{runtime.url}/api/health").status_code == 200
    finally:
        runtime.stop()
