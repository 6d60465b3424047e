"""The files API against a real server and a real PocketBase instance (issue 14): what is put
into `pb_public` is served at the instance's `/` and a hook put into `pb_hooks` answers, with
no restart by the control plane; every refusal (traversal, absolute paths, `pb_data`, links,
a file too large, the disk quota, another tenant, no credentials) with its status.

The server takes uploads up to `PF_FILES_MAX_FILE_MB=1` while every other body of the apex is
limited to `PF_MAX_BODY_BYTES=4096`: uploads get their own limit."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.support.raw_http import exchange, request_head
from tests.support.server import BIN, ServeProcess, running_server, sign_up

MAX_FILE = 1024 * 1024
APEX_LIMIT = 4096
HOOK = b'routerAdd("GET", "/hello", (e) => e.string(200, "hi"))\n'

_ids = itertools.count()


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    """SQLite only: the files API is the same over either control database."""
    env = {"PF_FILES_MAX_FILE_MB": "1", "PF_MAX_BODY_BYTES": str(APEX_LIMIT)}
    with running_server(env=env) as server:
        yield server


class Person:
    def __init__(self, serve: ServeProcess, prefix: str) -> None:
        self.email = f"{prefix}{next(_ids)}@example.com"
        self.api = serve.client()
        self.api.headers["Authorization"] = f"Bearer {sign_up(self.api, self.email)}"

    def running(self, prefix: str) -> dict[str, Any]:
        name = f"{prefix}{next(_ids)}"
        assert self.api.post("/api/instances", json={"name": name}).status_code == 201
        started = self.api.post(f"/api/instances/{name}/start")
        assert started.status_code == 200 and started.json()["status"] == "running", started.text
        row: dict[str, Any] = started.json()
        return row


@pytest.fixture(scope="module")
def owner(serve: ServeProcess) -> Iterator[Person]:
    person = Person(serve, "files")
    yield person
    person.api.close()


@pytest.fixture(scope="module")
def instance(owner: Person) -> dict[str, Any]:
    return owner.running("files")


def files_url(row: dict[str, Any], path: str = "") -> str:
    return f"/api/instances/{row['name']}/files" + (f"/{path}" if path else "")


def folder_of(serve: ServeProcess, row: dict[str, Any]) -> Path:
    return serve.data_dir / "instances" / row["id"]


def assert_refused(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status, body
    if code is not None:
        assert body["code"] == code, body


def poll(get: Any, check: Any, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response: httpx.Response = get()
            if check(response):
                return response
        except httpx.TransportError:
            response = None  # type: ignore[assignment]
        assert time.monotonic() < deadline, response.text if response is not None else "no answer"
        time.sleep(0.2)


# ----- what tenants do


def test_a_page_put_into_pb_public_is_served_at_the_instance_root(
    serve: ServeProcess, owner: Person, instance: dict[str, Any]
) -> None:
    page = b"<!doctype html><h1>shipped by the files API</h1>\n"
    put = owner.api.put(files_url(instance, "pb_public/index.html"), content=page)
    assert put.status_code == 201, put.text
    assert put.json()["path"] == "pb_public/index.html" and put.json()["size"] == len(page)
    with serve.instance_client(instance["name"]) as site:
        served = poll(lambda: site.get("/"), lambda r: r.status_code == 200)
        assert served.content == page
    written = (folder_of(serve, instance) / "pb_public" / "index.html").stat()
    assert (written.st_uid, written.st_mode & 0o777) == (instance_uid(serve, instance), 0o644)
    again = owner.api.put(files_url(instance, "pb_public/index.html"), content=page)
    assert again.status_code == 200, again.text  # replaced


def instance_uid(serve: ServeProcess, row: dict[str, Any]) -> int:
    return folder_of(serve, row).stat().st_uid


def test_a_hook_put_into_pb_hooks_answers_without_a_restart_by_us(
    serve: ServeProcess, owner: Person, instance: dict[str, Any]
) -> None:
    started = owner.api.get(f"/api/instances/{instance['name']}").json()["started"]
    put = owner.api.put(files_url(instance, "pb_hooks/hello.pb.js"), content=HOOK)
    assert put.status_code == 201, put.text
    with serve.instance_client(instance["name"]) as site:
        # until PocketBase has reloaded, /hello is pb_public's index.html (its fallback)
        hello = poll(lambda: site.get("/hello"), lambda r: r.text == "hi")
        assert hello.status_code == 200
    row = owner.api.get(f"/api/instances/{instance['name']}").json()
    assert row["status"] == "running" and row["started"] == started  # PocketBase did it alone


def test_list_read_move_mkdir_and_delete(owner: Person, instance: dict[str, Any]) -> None:
    api = owner.api
    listed = api.get(files_url(instance))
    assert [e["path"] for e in listed.json()] == ["pb_hooks", "pb_migrations", "pb_public"]
    made = api.post(f"/api/instances/{instance['name']}/folders/pb_public/docs/v1")
    assert made.status_code == 201 and made.json()["kind"] == "dir", made.text
    assert_refused(api.post(f"/api/instances/{instance['name']}/folders/pb_public/docs"), 409)
    body = b"\x00\x01binary\xff" * 100
    assert api.put(files_url(instance, "pb_public/docs/v1/a.bin"), content=body).status_code == 201
    read = api.get(files_url(instance, "pb_public/docs/v1/a.bin"))
    assert read.status_code == 200 and read.content == body
    assert read.headers["content-type"] == "application/octet-stream"
    assert read.headers["content-disposition"].startswith("attachment")
    assert read.headers["x-content-type-options"] == "nosniff"
    moved = api.post(
        files_url(instance, "pb_public/docs/v1/a.bin/move"), json={"to": "pb_public/docs/b.bin"}
    )
    assert moved.status_code == 200 and moved.json()["path"] == "pb_public/docs/b.bin", moved.text
    assert_refused(api.get(files_url(instance, "pb_public/docs/v1/a.bin")), 404)
    entries = api.get(files_url(instance), params={"path": "pb_public/docs"}).json()
    assert [(e["name"], e["kind"], e["size"]) for e in entries] == [
        ("b.bin", "file", len(body)),
        ("v1", "dir", 0),
    ]
    assert_refused(api.get(files_url(instance, "pb_public/docs")), 409)  # a folder
    assert_refused(api.delete(files_url(instance, "pb_public/docs")), 409)  # not empty
    gone = api.delete(files_url(instance, "pb_public/docs"), params={"recursive": "true"})
    assert gone.status_code == 204, gone.text
    assert_refused(api.get(files_url(instance), params={"path": "pb_public/docs"}), 404)


def test_an_upload_may_pass_the_apex_body_limit_up_to_the_file_limit_streamed(
    owner: Person, instance: dict[str, Any]
) -> None:
    def pieces() -> Iterator[bytes]:  # chunked: no Content-Length
        for _ in range(16):
            yield b"y" * (MAX_FILE // 16)

    url = files_url(instance, "pb_public/big.bin")
    put = owner.api.put(url, content=pieces())
    assert put.status_code == 201 and put.json()["size"] == MAX_FILE, put.text
    assert owner.api.get(url).content == b"y" * MAX_FILE
    # the rest of the apex keeps its own limit
    assert_refused(owner.api.patch(f"/api/instances/{instance['name']}", content=b" " * 5000), 413)


def test_an_operator_reaches_every_instance(
    serve: ServeProcess, owner: Person, instance: dict[str, Any]
) -> None:
    operator = Person(serve, "files-op")
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", operator.email],
        env=serve.env(), check=True, capture_output=True,
    )  # fmt: skip
    owner.api.put(files_url(instance, "pb_migrations/1_init.js"), content=b"// migration")
    read = operator.api.get(files_url(instance, "pb_migrations/1_init.js"))
    assert read.status_code == 200 and read.content == b"// migration", read.text
    listed = operator.api.get(files_url(instance), params={"path": "pb_migrations"})
    assert "1_init.js" in [e["name"] for e in listed.json()]
    operator.api.close()


# ----- refusals


def test_paths_outside_the_code_folders_are_refused(
    serve: ServeProcess, owner: Person, instance: dict[str, Any]
) -> None:
    name = instance["name"]
    secret = (folder_of(serve, instance) / "pb_data" / "data.db").read_bytes()
    for path in (
        "pb_public/%2E%2E/pb_data/data.db",
        "pb_public/../pb_data/data.db",
        "%2E%2E/%2E%2E/etc/passwd",
        "/etc/passwd",
        "pb_data/data.db",
        "output.log",
        "pb_public//index.html",
        "pb_public/a%00b",
        "pb_public/" + "a" * 300,
    ):
        target = f"/api/instances/{name}/files/{path}".encode()
        host = f"127.0.0.1:{serve.port}"
        auth = owner.api.headers["Authorization"]
        for method in ("GET", "PUT", "DELETE"):
            head = request_head(method, target.decode(), host, f"Authorization: {auth}",
                                "Content-Length: 5")  # fmt: skip
            response = exchange(serve.port, head + b"pwned")
            assert response.status == 422, (method, path, response.body)
            assert response.json()["field"] == "path"
            assert b"passwd" not in response.body and b"data.db" not in response.body
        listed = owner.api.get(files_url(instance), params={"path": unquote(path)})
        assert_refused(listed, 422, "invalid")
    moved = owner.api.post(
        files_url(instance, "pb_public/index.html/move"), json={"to": "pb_data/data.db"}
    )
    assert_refused(moved, 422)
    assert moved.json()["field"] == "to"
    assert_refused(owner.api.post(f"/api/instances/{name}/folders/pb_data/x"), 422)
    assert (folder_of(serve, instance) / "pb_data" / "data.db").read_bytes()[:100] == secret[:100]


def test_symlinks_and_special_files_are_refused(
    serve: ServeProcess, owner: Person, instance: dict[str, Any]
) -> None:
    public = folder_of(serve, instance) / "pb_public"
    os.symlink("/etc", public / "etc")
    os.symlink(folder_of(serve, instance) / "pb_data" / "data.db", public / "db")
    os.mkfifo(public / "pipe")
    uid = instance_uid(serve, instance)
    for entry in ("etc", "db", "pipe"):
        os.chown(public / entry, uid, uid, follow_symlinks=False)
    api = owner.api
    for response in (
        api.get(files_url(instance, "pb_public/etc/passwd")),
        api.get(files_url(instance), params={"path": "pb_public/etc"}),
        api.put(files_url(instance, "pb_public/etc/pwned"), content=b"x"),
        api.get(files_url(instance, "pb_public/db")),
        api.put(files_url(instance, "pb_public/db"), content=b"x"),
        api.get(files_url(instance, "pb_public/pipe")),
        api.post(files_url(instance, "pb_public/db/move"), json={"to": "pb_public/stolen"}),
    ):
        assert_refused(response, 422, "invalid")
        assert "root:" not in response.text
    names = [e["name"] for e in api.get(files_url(instance), params={"path": "pb_public"}).json()]
    assert not {"etc", "db", "pipe"} & set(names)
    assert api.delete(files_url(instance, "pb_public/db")).status_code == 204  # the link only
    assert (folder_of(serve, instance) / "pb_data" / "data.db").exists()
    assert not os.path.lexists(public / "db")


def test_a_file_over_the_limit_is_refused(owner: Person, instance: dict[str, Any]) -> None:
    url = files_url(instance, "pb_public/too-big.bin")
    declared = owner.api.put(url, content=b"z" * (MAX_FILE + 1))
    assert_refused(declared, 413, "too_large")

    def pieces() -> Iterator[bytes]:
        for _ in range(17):
            yield b"z" * (MAX_FILE // 16)

    streamed = owner.api.put(url, content=pieces())
    assert_refused(streamed, 413, "too_large")
    assert_refused(owner.api.get(url), 404)  # nothing of it stays


def test_writes_over_the_disk_quota_are_refused(serve: ServeProcess, owner: Person) -> None:
    operator = Person(serve, "quota-op")
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", operator.email],
        env=serve.env(), check=True, capture_output=True,
    )  # fmt: skip
    row = owner.running("quota")
    limited = operator.api.patch(f"/api/fleet/instances/{row['name']}", json={"disk_limit_mb": 1})
    assert limited.status_code == 200, limited.text
    url = files_url(row, "pb_public/large.bin")
    response = owner.api.put(url, content=b"q" * (MAX_FILE - 1))  # under the file limit
    assert_refused(response, 507, "over_quota")
    assert "quota" in response.json()["detail"]
    assert_refused(owner.api.get(url), 404)
    operator.api.close()


def test_another_tenant_gets_404_and_no_credentials_401_everywhere(
    serve: ServeProcess, instance: dict[str, Any]
) -> None:
    stranger = Person(serve, "stranger")
    anonymous = serve.client()
    name = instance["name"]
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", files_url(instance), {}),
        ("GET", files_url(instance), {"params": {"path": "pb_public"}}),
        ("GET", files_url(instance, "pb_public/index.html"), {}),
        ("PUT", files_url(instance, "pb_public/index.html"), {"content": b"defaced"}),
        ("DELETE", files_url(instance, "pb_public/index.html"), {}),
        ("POST", files_url(instance, "pb_public/index.html/move"), {"json": {"to": "pb_public/x"}}),
        ("POST", f"/api/instances/{name}/folders/pb_public/x", {}),
    ]
    for method, url, extra in calls:
        assert_refused(stranger.api.request(method, url, **extra), 404, "not_found")
        assert_refused(anonymous.request(method, url, **extra), 401, "unauthorized")
    page = (folder_of(serve, instance) / "pb_public" / "index.html").read_bytes()
    assert b"defaced" not in page
    stranger.api.close()
    anonymous.close()
