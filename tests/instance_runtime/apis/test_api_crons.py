"""`/api/crons` of a real runtime process: PocketBase's system jobs listed for superusers only,
and each one run on demand doing its work (expired OTPs / MFAs / old log entries deleted, the
WAL checkpointed). (Side by side with PocketBase: tests/conformance/test_conformance_crons.py.)

Expired sessions and old log entries are written straight into the databases (their `created`
cannot be set through the API), as another process may: SQLite's own locking applies.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess

SYSTEM_JOBS = [
    {"id": "__pbDBOptimize__", "expression": "0 0 * * *"},
    {"id": "__pbMFACleanup__", "expression": "0 * * * *"},
    {"id": "__pbOTPCleanup__", "expression": "0 * * * *"},
    {"id": "__pbLogsCleanup__", "expression": "0 */6 * * *"},
]
USER_EMAIL, USER_PASSWORD = "crons-user@example.com", "crons-user-pass-1"
OLD = "2000-01-01 00:00:00.000Z"


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.000Z")


def error(status: int, message: str) -> dict[str, object]:
    return {"data": {}, "message": message, "status": status}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def write(path: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute(sql, args)
    finally:
        conn.close()


def has_table(path: Path, table: str) -> bool:
    if not path.exists():
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return conn.execute(query, (table,)).fetchone() is not None
    finally:
        conn.close()


def ids(path: Path, table: str) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return {row[0] for row in conn.execute(f"SELECT id FROM `{table}`")}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def su(runtime: RuntimeProcess) -> Iterator[httpx.Client]:
    with runtime.client(superuser=True) as client:
        yield client


@pytest.fixture(scope="module")
def user(runtime: RuntimeProcess, su: httpx.Client) -> dict[str, str]:
    created = su.post(
        "/api/collections/users/records",
        json={"email": USER_EMAIL, "password": USER_PASSWORD, "passwordConfirm": USER_PASSWORD},
    )
    assert created.status_code == 200, created.text
    auth = runtime.client().post(
        "/api/collections/users/auth-with-password",
        json={"identity": USER_EMAIL, "password": USER_PASSWORD},
    )
    assert auth.status_code == 200, auth.text
    record = created.json()
    return {"id": record["id"], "collection": record["collectionId"], "token": auth.json()["token"]}


def test_a_fresh_instance_lists_pocketbases_system_jobs(su: httpx.Client) -> None:
    listed = su.get("/api/crons")
    assert listed.status_code == 200, listed.text
    assert listed.json() == SYSTEM_JOBS


def test_only_superusers_see_and_run_jobs(runtime: RuntimeProcess, user: dict[str, str]) -> None:
    guest = runtime.client()
    needs_auth = error(401, "The request requires valid record authorization token.")
    for response in (guest.get("/api/crons"), guest.post("/api/crons/__pbOTPCleanup__")):
        assert (response.status_code, response.json()) == (401, needs_auth)
    regular = runtime.client(token=user["token"])
    refused = error(403, "The authorized record is not allowed to perform this action.")
    for response in (regular.get("/api/crons"), regular.post("/api/crons/__pbOTPCleanup__")):
        assert (response.status_code, response.json()) == (403, refused)


def test_an_unknown_job_is_a_404(su: httpx.Client) -> None:
    for job in ("nope", "__pbNope__", "__pbotpcleanup__"):
        response = su.post(f"/api/crons/{job}")
        assert (response.status_code, response.json()) == (
            404, error(404, "Missing or invalid cron job."),
        )  # fmt: skip
    assert su.get("/api/crons/__pbOTPCleanup__").json() == error(404, "File not found.")


def test_otp_and_mfa_cleanups_delete_only_the_expired_sessions(
    runtime: RuntimeProcess, su: httpx.Client, user: dict[str, str]
) -> None:
    db = runtime.data_dir / "data.db"
    coll, rec = user["collection"], user["id"]
    for table, extra in (("_otps", "password"), ("_mfas", "method")):
        sql = (
            f"INSERT INTO `{table}` (id, collectionRef, recordRef, created, updated, {extra})"
            " VALUES (?, ?, ?, ?, ?, 'x')"
        )
        for row_id, created in ((f"{table[1:4]}expired", OLD), (f"{table[1:4]}fresh", now_text())):
            write(db, sql, row_id, coll, rec, created, created)
    assert ids(db, "_otps") == {"otpexpired", "otpfresh"}
    assert ids(db, "_mfas") == {"mfaexpired", "mfafresh"}

    ran = su.post("/api/crons/__pbOTPCleanup__")
    assert (ran.status_code, ran.content) == (204, b"")
    wait_for(lambda: ids(db, "_otps") == {"otpfresh"}, "the expired OTP was not deleted")
    assert ids(db, "_mfas") == {"mfaexpired", "mfafresh"}  # the other job's work

    assert su.post("/api/crons/__pbMFACleanup__").status_code == 204
    wait_for(lambda: ids(db, "_mfas") == {"mfafresh"}, "the expired MFA was not deleted")
    assert ids(db, "_otps") == {"otpfresh"}


def test_logs_cleanup_deletes_the_entries_past_max_days(
    runtime: RuntimeProcess, su: httpx.Client
) -> None:
    aux = runtime.data_dir / "auxiliary.db"
    su.get("/api/health?crons-logs")
    wait_for(lambda: has_table(aux, "_logs"), "the request log was never written")
    write(aux, "INSERT INTO `_logs` (id, level, message, data, created) VALUES "
               "('oldcronsentry', 0, 'old', '{}', ?)", OLD)  # fmt: skip
    assert "oldcronsentry" in ids(aux, "_logs")
    assert su.post("/api/crons/__pbLogsCleanup__").status_code == 204
    wait_for(lambda: "oldcronsentry" not in ids(aux, "_logs"), "the old entry was not deleted")


def test_db_optimize_checkpoints_the_wal(runtime: RuntimeProcess, su: httpx.Client) -> None:
    wal = runtime.data_dir / "data.db-wal"
    made = su.post("/api/collections", json={"name": "crons_wal", "type": "base"})
    assert made.status_code == 200, made.text
    assert wal.stat().st_size > 0
    assert su.post("/api/crons/__pbDBOptimize__").status_code == 204
    wait_for(lambda: wal.stat().st_size == 0, "the WAL was not checkpointed (truncated)")
    assert su.get("/api/crons").json() == SYSTEM_JOBS  # running jobs changes no listing
