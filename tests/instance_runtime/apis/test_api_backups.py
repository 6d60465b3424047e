"""`/api/backups` and the superuser members of `/api/health`, against real runtime processes
(and, for the busy flag, a runtime served in this process over loopback): every route for
superusers only, downloads by superuser file token only, PocketBase's answers (captured from
0.40.6) for keys with `..`, `/`, sidecars or that do not exist, the name rules, streamed
uploads, one operation at a time, a restore while requests keep coming (none fails, they are
held and answered on the restored data; realtime streams end), a bad archive that changes
nothing, and the same with the backups in S3 (a real moto server)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from instance_runtime.core import backups as service
from instance_runtime.server import create_app
from tests.instance_runtime.runtime_process import EMAIL, PASSWORD, RuntimeProcess
from tests.support.ports import free_port
from tests.support.raw_http import exchange, request_head
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer
from tests.support.server import scratch_dir

MEMBER_PASSWORD = "member-pass-1234"
BUSY = "Try again later - another backup/restore process has already been started."
NOT_FOUND = {"data": {}, "message": "The requested resource wasn't found.", "status": 404}
NO_ACCESS = {
    "data": {},
    "message": "Insufficient permissions to access the resource.",
    "status": 403,
}
GENERIC = {
    "data": {},
    "message": "Something went wrong while processing your request.",
    "status": 400,
}
MISSING = {"data": {}, "message": "Missing or invalid backup file.", "status": 400}
INVALID = "An error occurred while validating the submitted data."
BUCKET = "pf-runtime-backups"


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def _eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, "the condition did not become true"
        time.sleep(0.05)


def _file_token(client: httpx.Client) -> str:
    token: str = _ok(client.post("/api/files/token"))["token"]
    return token


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def member(runtime: RuntimeProcess) -> httpx.Client:
    """A signed-in record of an auth collection that is not `_superusers`."""
    su = runtime.client(superuser=True)
    _ok(su.post("/api/collections", json={"name": "members", "type": "auth"}))
    body = {
        "email": "m@example.com",
        "password": MEMBER_PASSWORD,
        "passwordConfirm": MEMBER_PASSWORD,
    }
    _ok(su.post("/api/collections/members/records", json=body))
    auth = _ok(
        httpx.post(
            f"{runtime.url}/api/collections/members/auth-with-password",
            json={"identity": "m@example.com", "password": MEMBER_PASSWORD},
        )
    )
    return runtime.client(token=auth["token"])


def test_every_route_is_for_superusers(runtime: RuntimeProcess, member: httpx.Client) -> None:
    guest = runtime.client()
    for client, status in ((guest, 401), (member, 403)):
        assert client.get("/api/backups").status_code == status
        assert client.post("/api/backups", json={}).status_code == status
        assert (
            client.post("/api/backups/upload", files={"file": ("a.zip", b"PK")}).status_code
            == status
        )
        assert client.delete("/api/backups/a.zip").status_code == status
        assert client.post("/api/backups/a.zip/restore").status_code == status
    su = runtime.client(superuser=True)
    _ok(su.post("/api/backups", json={"name": "guarded.zip"}), 204)
    downloads = [
        guest.get("/api/backups/guarded.zip"),
        su.get("/api/backups/guarded.zip"),  # the Authorization header is not enough
        guest.get("/api/backups/guarded.zip", params={"token": ""}),
        guest.get("/api/backups/guarded.zip", params={"token": runtime.token()}),  # auth token
        guest.get("/api/backups/guarded.zip", params={"token": _file_token(member)}),
        guest.get("/api/backups/guarded.zip", params={"token": "eyJ.not.valid"}),
    ]
    for answer in downloads:
        assert (answer.status_code, answer.json()) == (403, NO_ACCESS)
    # a superuser's file token from outside `superuserIPs`
    settings = {"superuserIPs": ["10.9.9.0/24"], "trustedProxy": {"headers": ["X-Real-IP"]}}
    inside = {"X-Real-IP": "10.9.9.9"}
    token = _file_token(su)
    _ok(su.patch("/api/settings", json=settings, headers=inside))
    try:
        outside = guest.get("/api/backups/guarded.zip", params={"token": token})
        assert (outside.status_code, outside.json()) == (403, NO_ACCESS)
        allowed = guest.get("/api/backups/guarded.zip", params={"token": token}, headers=inside)
        assert allowed.status_code == 200
    finally:
        _ok(su.patch("/api/settings", json={"superuserIPs": []}, headers=inside))
    _ok(su.delete("/api/backups/guarded.zip"), 204)


def test_create_list_download_delete(runtime: RuntimeProcess) -> None:
    su = runtime.client(superuser=True)
    _ok(su.post("/api/backups", json={"name": "first.zip"}), 204)
    _ok(su.post("/api/backups"), 204)  # a generated name
    listed = _ok(su.get("/api/backups"))
    keys = [item["key"] for item in listed]
    assert keys == sorted(keys) and "first.zip" in keys
    generated = [k for k in keys if k.startswith("pb_backup_acme_")]
    assert len(generated) == 1 and service.NAME_PATTERN.match(generated[0])
    folder = runtime.data_dir / "backups"
    for item in listed:
        assert item["size"] == (folder / item["key"]).stat().st_size
        assert len(item["modified"]) == len("2026-12-03 09:37:57.226Z")
        assert item["modified"].endswith("Z")

    token = _file_token(su)
    got = httpx.get(f"{runtime.url}/api/backups/first.zip", params={"token": token})
    assert got.status_code == 200
    assert got.content == (folder / "first.zip").read_bytes()
    assert got.headers["content-type"] == "application/zip"
    assert got.headers["content-disposition"] == 'attachment; filename="first.zip"'
    assert got.headers["cache-control"] == "max-age=2592000, stale-while-revalidate=86400"
    assert got.headers["content-security-policy"].startswith("default-src 'none'")
    assert got.headers["accept-ranges"] == "bytes" and "last-modified" in got.headers
    with zipfile.ZipFile(io.BytesIO(got.content)) as archive:
        assert archive.namelist()[:2] == ["data.db", "auxiliary.db"]
    part = httpx.get(
        f"{runtime.url}/api/backups/first.zip",
        params={"token": token},
        headers={"Range": "bytes=0-3"},
    )
    assert (part.status_code, part.content) == (206, b"PK\x03\x04")
    head = httpx.head(f"{runtime.url}/api/backups/first.zip", params={"token": token})
    assert head.status_code == 200 and head.headers["content-length"] == str(len(got.content))

    _ok(su.delete("/api/backups/first.zip"), 204)
    assert "first.zip" not in [item["key"] for item in _ok(su.get("/api/backups"))]
    again = su.delete("/api/backups/first.zip")
    where = os.path.abspath(folder / "first.zip")
    assert again.json() == {
        "data": {},
        "message": "Invalid or already deleted backup file. Raw error: \n[key: first.zip] remove "
        f"{where}: no such file or directory\nresource not found.",
        "status": 400,
    }
    gone = httpx.get(f"{runtime.url}/api/backups/first.zip", params={"token": token})
    assert (gone.status_code, gone.json()) == (404, NOT_FOUND)
    _ok(su.delete(f"/api/backups/{generated[0]}"), 204)


def test_the_name_rules_are_pocketbase_s(runtime: RuntimeProcess) -> None:
    su = runtime.client(superuser=True)
    _ok(su.post("/api/backups", json={"name": "taken.zip"}), 204)
    cases = {
        "a" * 147 + ".zip": {
            "code": "validation_length_out_of_range",
            "message": "The length must be between 1 and 150.",
            "params": {"max": 150, "min": 1},
        },
        "Bad.zip": {"code": "validation_match_invalid", "message": "Must be in a valid format."},
        "x": {"code": "validation_match_invalid", "message": "Must be in a valid format."},
        "taken.zip": {
            "code": "validation_backup_name_exists",
            "message": "The backup file name is invalid or already exists.",
        },
    }
    for name, error in cases.items():
        answer = su.post("/api/backups", json={"name": name})
        assert answer.json() == {"data": {"name": error}, "message": INVALID, "status": 400}, name
    for body in ('{"name": 5}', "{"):
        answer = su.post("/api/backups", content=body, headers={"Content-Type": "application/json"})
        assert answer.json()["message"] == "An error occurred while loading the submitted data."
    _ok(su.post("/api/backups", data={"name": "as_form.zip"}), 204)  # a form body works too
    for name in ("taken.zip", "as_form.zip"):
        _ok(su.delete(f"/api/backups/{name}"), 204)


def _raw(runtime: RuntimeProcess, method: str, path: str, token: str = "") -> tuple[int, Any]:
    headers = [f"Authorization: {token}"] if token else []
    answer = exchange(
        runtime.port, request_head(method, path, "127.0.0.1", *headers, "Content-Length: 0")
    )
    return answer.status, answer.json()


def test_keys_that_cannot_be_backups_are_refused_as_pocketbase(runtime: RuntimeProcess) -> None:
    """Sent as written (httpx would normalise the dot segments); answers of PocketBase 0.40.6."""
    su_token = runtime.token()
    token = _file_token(runtime.client(superuser=True))
    folder = os.path.abspath(runtime.data_dir / "backups")
    for key in (
        "..%2Fdata.db",
        "..%2F..%2Fpb_data%2Fdata.db",
        "a%2Fb.zip",
        "%2Fetc%2Fpasswd",
        "missing.zip",
    ):
        assert _raw(runtime, "GET", f"/api/backups/{key}?token={token}") == (404, NOT_FOUND), key
        assert _raw(runtime, "POST", f"/api/backups/{key}/restore", su_token) == (400, MISSING)
    for key in ("%2E%2E", "%2E", "..", "ok.zip.attrs"):
        assert _raw(runtime, "GET", f"/api/backups/{key}?token={token}") == (400, GENERIC), key
        assert _raw(runtime, "POST", f"/api/backups/{key}/restore", su_token) == (400, MISSING)

    def deleted(key: str) -> str:
        status, body = _raw(runtime, "DELETE", f"/api/backups/{key}", su_token)
        assert status == 400 and body["message"].startswith(
            "Invalid or already deleted backup file. Raw error: \n"
        )
        return str(body["message"]).split("\n", 1)[1]

    assert deleted("%2E%2E") == '[key: ..] fileblob: key ".." escapes bucket root.'
    assert deleted("..") == '[key: ..] fileblob: key ".." escapes bucket root.'
    assert deleted("ok.zip.attrs") == '[key: ok.zip.attrs] file extension ".attrs" is reserved.'
    missing = "no such file or directory\nresource not found."
    assert (
        deleted("..%2Fdata.db") == f"[key: ../data.db] remove {folder}/..__0x2f__data.db: {missing}"
    )
    assert deleted("a%2Fb.zip") == f"[key: a/b.zip] remove {folder}/a/b.zip: {missing}"
    assert deleted("%2Fetc%2Fpasswd") == f"[key: /etc/passwd] remove {folder}/etc/passwd: {missing}"
    # an unescaped "/" is another route
    assert _raw(runtime, "DELETE", "/api/backups/a/b.zip", su_token) == (404, NOT_FOUND)
    assert (runtime.data_dir / "data.db").exists()


def test_uploads_are_streamed_and_refused_as_pocketbase(
    runtime: RuntimeProcess, tmp_path: Path
) -> None:
    su = runtime.client(superuser=True)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w") as archive:  # ~40 MB of incompressible data
        archive.writestr("data.db", os.urandom(40 << 20))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    with big.open("rb") as fh:
        _ok(su.post("/api/backups/upload", files={"file": ("../../big.zip", fh)}), 204)
    stored = runtime.data_dir / "backups" / "big.zip"  # the base name of what was sent
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    assert not list((runtime.data_dir / ".pb_temp_to_delete").glob("pb_upload_*"))

    def refused(**kwargs: Any) -> Any:
        answer = su.post("/api/backups/upload", **kwargs)
        body = answer.json()
        assert (answer.status_code, body["message"]) == (400, INVALID)
        return body["data"]["file"]

    blank = {"code": "validation_required", "message": "Cannot be blank."}
    assert refused() == blank
    assert refused(files={"other": ("x.zip", b"PK\x03\x04")}) == blank
    assert refused(json={"file": "x"}) == blank
    wrong = refused(files={"file": ("notes.txt", b"hello")})
    assert wrong["code"] == "validation_invalid_mime_type"
    assert wrong["message"].startswith('"notes_') and wrong["message"].endswith(
        '.txt" mime type must be one of: application/zip.'
    )
    exists = {
        "code": "validation_backup_name_exists",
        "message": "Backup file with the specified name already exists.",
    }
    assert refused(files={"file": ("big.zip", _zip({"a": b"a"}))}) == exists
    assert refused(files={"file": ("x.attrs", _zip({"a": b"a"}))}) == exists
    empty = b"PK\x05\x06" + b"\0" * 18  # an empty zip is a zip to PocketBase too
    _ok(
        su.post(
            "/api/backups/upload", files=[("file", ("e.zip", empty)), ("file", ("f.zip", empty))]
        ),
        204,
    )
    names = [item["key"] for item in _ok(su.get("/api/backups"))]
    assert "e.zip" in names and "f.zip" not in names  # the first file part only
    for name in ("big.zip", "e.zip"):
        _ok(su.delete(f"/api/backups/{name}"), 204)


def test_health_shows_superusers_the_backup_state_and_proxy_hints(runtime: RuntimeProcess) -> None:
    su = runtime.client(superuser=True)
    assert httpx.get(f"{runtime.url}/api/health").json() == {
        "message": "API is healthy.",
        "code": 200,
        "data": {},
    }
    data = _ok(su.get("/api/health"))["data"]
    assert data == {"canBackup": True, "realIP": "127.0.0.1", "possibleProxyHeader": ""}
    forwarded = _ok(su.get("/api/health", headers={"X-Forwarded-For": "203.0.113.7"}))["data"]
    assert forwarded["realIP"] == "127.0.0.1", "not a trusted proxy header"
    assert forwarded["possibleProxyHeader"] == "X-Forwarded-For"
    both = {"Fly-Client-IP": "1.1.1.1", "CF-Connecting-IP": "2.2.2.2"}
    assert (
        _ok(su.get("/api/health", headers=both))["data"]["possibleProxyHeader"]
        == "CF-Connecting-IP"
    )
    _ok(su.patch("/api/settings", json={"trustedProxy": {"headers": ["X-Real-IP"]}}))
    try:
        behind = _ok(su.get("/api/health", headers={"X-Real-IP": "198.51.100.4", **both}))["data"]
        assert behind["realIP"] == "198.51.100.4"
        assert behind["possibleProxyHeader"] == "X-Real-IP"
    finally:
        _ok(su.patch("/api/settings", json={"trustedProxy": {"headers": []}}))


# --- one operation at a time (a runtime served in this process, to hold the busy flag) -------


@pytest.fixture
def in_process() -> Iterator[tuple[str, service.Backups]]:
    root = scratch_dir("pf-backups-busy-")
    data_dir = root / "pb_data"
    subprocess.run(
        [sys.executable, "-m", "instance_runtime", "superuser", "upsert", EMAIL, PASSWORD,
         "--dir", str(data_dir)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    asgi = create_app(data_dir)
    port = free_port()
    config = uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _eventually(lambda: server.started, timeout=30)
    try:
        yield f"http://127.0.0.1:{port}", service.backups_of(asgi.state.runtime)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def test_one_backup_or_restore_at_a_time(in_process: tuple[str, service.Backups]) -> None:
    url, backups = in_process
    token = _ok(
        httpx.post(
            f"{url}/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
    )["token"]
    su = httpx.Client(base_url=url, headers={"Authorization": token}, timeout=30)
    _ok(su.post("/api/backups", json={"name": "in_use.zip"}), 204)
    with backups.running("in_use.zip"):  # as a running backup named so
        assert _ok(su.get("/api/health"))["data"]["canBackup"] is False
        for answer in (
            su.post("/api/backups", json={"name": "x.zip"}),
            su.post("/api/backups/in_use.zip/restore"),
        ):
            assert answer.json() == {"data": {}, "message": BUSY, "status": 400}
        in_use = su.delete("/api/backups/in_use.zip")
        assert (
            in_use.json()["message"] == "The backup is currently being used and cannot be deleted."
        )
        _ok(su.post("/api/backups/upload", files={"file": ("other.zip", _zip({"a": b""}))}), 204)
        _ok(su.delete("/api/backups/other.zip"), 204)  # others may go
    assert _ok(su.get("/api/health"))["data"]["canBackup"] is True
    _ok(su.delete("/api/backups/in_use.zip"), 204)


# --- restores, on runtimes of their own -------------------------------------------------------


@pytest.fixture
def fresh() -> Iterator[RuntimeProcess]:
    with RuntimeProcess.started() as process:
        yield process


def _notes(su: httpx.Client) -> list[str]:
    items = _ok(su.get("/api/collections/notes/records", params={"sort": "title", "perPage": 200}))
    return [item["title"] for item in items["items"]]


def _with_notes(su: httpx.Client, *titles: str) -> None:
    if su.get("/api/collections/notes").status_code == 404:
        _ok(
            su.post(
                "/api/collections",
                json={"name": "notes", "fields": [{"name": "title", "type": "text"}]},
            )
        )
    for title in titles:
        _ok(su.post("/api/collections/notes/records", json={"title": title}))


def test_a_restore_while_requests_keep_coming(fresh: RuntimeProcess) -> None:
    su = fresh.client(superuser=True)
    _with_notes(su, "a", "b")
    _ok(su.post("/api/backups", json={"name": "two.zip"}), 204)
    _with_notes(su, "c")
    assert _notes(su) == ["a", "b", "c"]
    stop = threading.Event()
    answers: list[int | str] = []

    def keep_reading() -> None:
        with fresh.client(superuser=True) as client:
            while not stop.is_set():
                try:
                    answers.append(client.get("/api/collections/notes/records").status_code)
                except httpx.HTTPError as exc:
                    answers.append(type(exc).__name__)

    readers = [threading.Thread(target=keep_reading) for _ in range(3)]
    stream_ended = threading.Event()
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{fresh.url}/api/realtime", timeout=60) as response:
            for chunk in response.iter_bytes():
                if b"PB_CONNECT" in chunk:
                    connected.set()
        stream_ended.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    for reader in readers:
        reader.start()
    try:
        _eventually(lambda: len(answers) > 10 and connected.is_set())
        _ok(su.post("/api/backups/two.zip/restore"), 204)
        _eventually(lambda: _notes(su) == ["a", "b"])
        seen = len(answers)
        _eventually(lambda: len(answers) > seen + 10)  # still answering after the restore
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert set(answers) == {200}, "every request was held and answered, none failed"
    assert stream_ended.wait(10), "the realtime stream ended with the restart"
    assert _ok(su.get("/api/health"))["data"]["canBackup"] is True
    _with_notes(su, "d")  # writes work on the restored data
    assert _notes(su) == ["a", "b", "d"]
    assert [i["key"] for i in _ok(su.get("/api/backups"))] == ["two.zip"]
    assert "backup two.zip restored" in (fresh.root / "runtime.log").read_text()


def test_a_bad_archive_is_refused_and_the_data_stays(fresh: RuntimeProcess) -> None:
    su = fresh.client(superuser=True)
    _with_notes(su, "kept")
    _ok(
        su.post("/api/backups/upload", files={"file": ("nodb.zip", _zip({"hello.txt": b"x"}))}), 204
    )
    _ok(su.post("/api/backups/nodb.zip/restore"), 204)  # refused in the background, as PocketBase

    def logged() -> Any:
        items = _ok(su.get("/api/logs", params={"filter": "message = 'Failed to restore backup'"}))
        return items["items"]

    entry = _eventually(logged)[0]
    assert entry["level"] == 8 and entry["data"]["key"] == "nodb.zip"
    assert entry["data"]["error"].startswith("data.db file is missing or invalid: stat ")
    assert _notes(su) == ["kept"]
    assert _ok(su.get("/api/health"))["data"]["canBackup"] is True


# --- backups in S3 ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        server.create_bucket(BUCKET)
        yield server


def _s3(moto: MotoServer) -> dict[str, Any]:
    return {
        "enabled": True,
        "bucket": BUCKET,
        "region": "us-east-1",
        "endpoint": moto.url,
        "accessKey": ACCESS_KEY,
        "secret": SECRET_KEY,
        "forcePathStyle": True,
    }


def _bucket(moto: MotoServer) -> list[str]:
    found = moto.client().list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return sorted(item["Key"] for item in found)


def test_backups_in_s3(fresh: RuntimeProcess, moto: MotoServer) -> None:
    su = fresh.client(superuser=True)
    _ok(su.patch("/api/settings", json={"backups": {"s3": _s3(moto)}}))
    _ok(su.post("/api/settings/test/s3", json={"filesystem": "backups"}), 204)
    _with_notes(su, "one")
    _ok(su.post("/api/backups", json={"name": "s3_one.zip"}), 204)
    assert _bucket(moto) == ["s3_one.zip"]  # at the bucket's root, as PocketBase
    assert not (fresh.data_dir / "backups").exists() or not list(
        (fresh.data_dir / "backups").iterdir()
    )
    head = moto.client().head_object(Bucket=BUCKET, Key="s3_one.zip")
    assert head["ContentType"] == "application/zip"
    assert head["Metadata"] == {"original-filename": "s3_one.zip"}
    listed = _ok(su.get("/api/backups"))
    assert [(i["key"], i["size"]) for i in listed] == [("s3_one.zip", head["ContentLength"])]

    token = _file_token(su)
    got = httpx.get(f"{fresh.url}/api/backups/s3_one.zip", params={"token": token})
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    assert got.content == moto.client().get_object(Bucket=BUCKET, Key="s3_one.zip")["Body"].read()

    _ok(su.post("/api/backups/upload", files={"file": ("up.zip", got.content)}), 204)
    assert _bucket(moto) == ["s3_one.zip", "up.zip"]
    _with_notes(su, "two")
    _ok(su.post("/api/backups/up.zip/restore"), 204)
    _eventually(lambda: _notes(su) == ["one"])
    assert not list((fresh.data_dir / ".pb_temp_to_delete").glob("pb_restore_zip_*"))

    _ok(su.delete("/api/backups/up.zip"), 204)
    _ok(su.delete("/api/backups/never-was.zip"), 204)  # S3 deletes what is not there, as PB
    assert _bucket(moto) == ["s3_one.zip"]
    missing = httpx.get(f"{fresh.url}/api/backups/never-was.zip", params={"token": token})
    assert (missing.status_code, missing.json()) == (404, NOT_FOUND)

    client = moto.client()
    for old in (
        "@auto_pb_backup_acme_20200101000000.zip",
        "@auto_pb_backup_acme_20200102000000.zip",
    ):
        client.put_object(Bucket=BUCKET, Key=old, Body=b"PK\x05\x06" + b"\0" * 18)
    time.sleep(1.1)  # S3 keeps modification times to the second: the next one is newer
    _ok(su.patch("/api/settings", json={"backups": {"cron": "0 3 * * *", "cronMaxKeep": 1}}))
    crons = [job["id"] for job in _ok(su.get("/api/crons"))]
    assert crons[-1] == "__pbAutoBackup__"
    _ok(su.post("/api/crons/__pbAutoBackup__"), 204)

    def autos() -> list[str]:
        return [k for k in _bucket(moto) if k.startswith("@auto_pb_backup_")]

    _eventually(lambda: len(autos()) == 1 and "2020" not in autos()[0])
    assert service.NAME_PATTERN.match(autos()[0][1:])
    assert "s3_one.zip" in _bucket(moto)
