"""Record files in S3, against a real runtime process and a real moto server: S3 is turned on
through the settings API, uploads through the records API land in the bucket as
`{collectionId}/{recordId}/{name}` (nothing under `pb_data/storage`), downloads stream from the
bucket with PocketBase's headers and ranges, replaced files and deleted records leave the
bucket, turning S3 off again goes back to local disk, and `POST /api/settings/test/s3`
answers as PocketBase's."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer

BUCKET = "pf-runtime-files"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        server.create_bucket(BUCKET)
        yield server


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _s3(moto: MotoServer, **extra: Any) -> dict[str, Any]:
    values = {
        "enabled": True,
        "bucket": BUCKET,
        "region": "us-east-1",
        "endpoint": moto.url,
        "accessKey": ACCESS_KEY,
        "secret": SECRET_KEY,
        "forcePathStyle": True,
    }
    values.update(extra)
    return values


def _keys(moto: MotoServer, prefix: str = "") -> list[str]:
    found = moto.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in found)


def _eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not become true"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def coll(runtime: RuntimeProcess, moto: MotoServer) -> dict[str, Any]:
    su = runtime.client(superuser=True)
    _ok(su.patch("/api/settings", json={"s3": _s3(moto)}))
    fields = [
        {"name": "title", "type": "text"},
        {"name": "doc", "type": "file", "maxSelect": 1, "maxSize": 64 << 20},
        {"name": "docs", "type": "file", "maxSelect": 3, "maxSize": 1 << 20},
    ]
    return _ok(su.post("/api/collections", json={"name": "fs3", "type": "base", "fields": fields}))


def test_settings_keep_s3_secret_hidden(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    s3 = _ok(runtime.client(superuser=True).get("/api/settings"))["s3"]
    assert s3["enabled"] is True and s3["bucket"] == BUCKET
    assert not s3.get("secret")


def test_files_live_in_the_bucket(
    runtime: RuntimeProcess, moto: MotoServer, coll: dict[str, Any]
) -> None:
    su = runtime.client(superuser=True)
    url = "/api/collections/fs3/records"
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(5000)
    created = _ok(
        su.post(
            url,
            data={"title": "a"},
            files=[
                ("doc", ("picture.png", png)),
                ("docs", ("x.txt", b"hello x")),
                ("docs", ("y.txt", b"hello y")),
            ],
        )
    )
    rid = created["id"]
    prefix = f"{coll['id']}/{rid}/"
    assert _keys(moto, prefix) == sorted(prefix + n for n in [created["doc"], *created["docs"]])
    assert not (runtime.data_dir / "storage" / coll["id"] / rid).exists()
    staging = runtime.data_dir / ".pf_uploads"
    assert not staging.exists() or os.listdir(staging) == []
    head = moto.client().head_object(Bucket=BUCKET, Key=prefix + created["doc"])
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"original-filename": "picture.png"}  # as PocketBase stores it

    got = su.get(f"/api/files/fs3/{rid}/{created['doc']}")
    assert got.status_code == 200
    assert got.content == png
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"] == f'inline; filename="{created["doc"]}"'
    assert got.headers["cache-control"] == "max-age=2592000, stale-while-revalidate=86400"
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["content-length"] == str(len(png))
    assert "last-modified" in got.headers and "etag" not in got.headers
    text = su.get(f"/api/files/fs3/{rid}/{created['docs'][0]}", params={"download": "1"})
    assert text.content == b"hello x"
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.headers["content-disposition"].startswith("attachment;")

    ranged = su.get(f"/api/files/fs3/{rid}/{created['doc']}", headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.content == png[10:20]
    assert ranged.headers["content-range"] == f"bytes 10-19/{len(png)}"
    tail = su.get(f"/api/files/fs3/{rid}/{created['doc']}", headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == png[-7:]
    multi = su.get(f"/api/files/fs3/{rid}/{created['doc']}", headers={"Range": "bytes=0-1,8-9"})
    assert multi.status_code == 206
    assert multi.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert png[0:2] in multi.content and png[8:10] in multi.content
    assert multi.headers["content-length"] == str(len(multi.content))
    outside = su.get(f"/api/files/fs3/{rid}/{created['doc']}", headers={"Range": "bytes=99999-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{len(png)}"
    assert outside.text == "invalid range: failed to overlap\n"
    assert outside.headers["x-content-type-options"] == "nosniff"
    assert "last-modified" not in outside.headers and "cache-control" not in outside.headers
    bad = su.get(f"/api/files/fs3/{rid}/{created['doc']}", headers={"Range": "bytes=x-"})
    assert bad.status_code == 416 and bad.text == "invalid range\n"
    since = su.get(
        f"/api/files/fs3/{rid}/{created['doc']}",
        headers={"If-Modified-Since": got.headers["last-modified"]},
    )
    assert since.status_code == 304 and since.content == b""
    head_only = su.head(f"/api/files/fs3/{rid}/{created['doc']}")
    assert head_only.status_code == 200 and head_only.content == b""
    assert head_only.headers["content-length"] == str(len(png))

    # replace one file, remove another: the old objects leave the bucket after the commit
    replaced = _ok(su.patch(f"{url}/{rid}", files=[("doc", ("two.txt", b"two"))]))
    removed = _ok(
        su.patch(f"{url}/{rid}", data={"@jsonPayload": json.dumps({"docs-": created["docs"][0]})})
    )
    want = sorted(prefix + n for n in [replaced["doc"], *removed["docs"]])
    _eventually(lambda: _keys(moto, prefix) == want)
    assert su.get(f"/api/files/fs3/{rid}/{created['doc']}").status_code == 404
    assert su.get(f"/api/files/fs3/{rid}/{replaced['doc']}").content == b"two"

    # a refused write leaves nothing in the bucket
    too_big = su.patch(f"{url}/{rid}", files=[("docs+", ("big.txt", b"z" * (2 << 20)))])
    assert too_big.status_code == 400
    assert _keys(moto, prefix) == want

    assert su.delete(f"{url}/{rid}").status_code == 204
    _eventually(lambda: _keys(moto, prefix) == [])


def test_a_large_upload_streams_through_s3(
    runtime: RuntimeProcess, moto: MotoServer, coll: dict[str, Any]
) -> None:
    su = runtime.client(superuser=True)
    payload = os.urandom(1 << 20) * 20  # 20 MiB: a multipart upload to S3
    created = _ok(
        su.post("/api/collections/fs3/records", files=[("doc", ("big.bin", payload))], timeout=120)
    )
    key = f"{coll['id']}/{created['id']}/{created['doc']}"
    assert moto.client().head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(payload)
    digest = hashlib.sha256()
    with su.stream("GET", f"/api/files/fs3/{created['id']}/{created['doc']}") as got:
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/octet-stream"
        for chunk in got.iter_bytes():
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(payload).digest()
    middle = su.get(
        f"/api/files/fs3/{created['id']}/{created['doc']}",
        headers={"Range": f"bytes={10 << 20}-{(10 << 20) + 99}"},
    )
    assert middle.status_code == 206 and middle.content == payload[10 << 20 : (10 << 20) + 100]
    assert moto.pending_uploads(BUCKET) == []


def test_settings_test_s3(runtime: RuntimeProcess, moto: MotoServer, coll: dict[str, Any]) -> None:
    su = runtime.client(superuser=True)
    test_url = "/api/settings/test/s3"
    assert su.post(test_url, json={"filesystem": "storage"}).status_code == 204
    assert not [k for k in _keys(moto) if k.startswith("pb_settings_test_")]

    blank = su.post(test_url, json={})
    assert blank.status_code == 400
    assert blank.json() == {
        "status": 400,
        "message": "Failed to test the S3 filesystem.",
        "data": {"filesystem": {"code": "validation_required", "message": "Cannot be blank."}},
    }
    other = su.post(test_url, json={"filesystem": "elsewhere"})
    assert other.status_code == 400
    assert other.json()["data"]["filesystem"]["code"] == "validation_in_invalid"

    disabled = su.post(test_url, json={"filesystem": "backups"})
    assert disabled.status_code == 400
    assert disabled.json() == {
        "status": 400,
        "message": "Failed to test the S3 filesystem. Raw error: \n"
        "S3 storage filesystem is not enabled.",
        "data": {},
    }

    backups = {"s3": _s3(moto, bucket="pf-no-such-bucket")}
    _ok(su.patch("/api/settings", json={"backups": backups}))
    failing = su.post(test_url, json={"filesystem": "backups"})
    assert failing.status_code == 400
    message = failing.json()["message"]
    assert message.startswith(
        "Failed to test the S3 filesystem. Raw error: \nfailed to upload a test file: "
    )
    assert "NoSuchBucket" in message

    assert runtime.client().post(test_url, json={"filesystem": "storage"}).status_code == 401


def test_s3_settings_are_validated(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    su = runtime.client(superuser=True)
    blank = ("bucket", "region", "endpoint", "accessKey", "secret")
    answer = su.patch(
        "/api/settings",
        json={"backups": {"s3": {"enabled": True, **dict.fromkeys(blank, "")}}},
    )
    assert answer.status_code == 400
    errors = answer.json()["data"]["backups"]["s3"]
    assert sorted(errors) == ["accessKey", "bucket", "endpoint", "region", "secret"]
    assert all(e["code"] == "validation_required" for e in errors.values())


def test_turning_s3_off_goes_back_to_local_disk(
    runtime: RuntimeProcess, moto: MotoServer, coll: dict[str, Any]
) -> None:
    su = runtime.client(superuser=True)
    in_s3 = _ok(su.post("/api/collections/fs3/records", files=[("doc", ("a.txt", b"in s3"))]))
    _ok(su.patch("/api/settings", json={"s3": {"enabled": False}}))
    try:
        local = _ok(su.post("/api/collections/fs3/records", files=[("doc", ("b.txt", b"on disk"))]))
        path = runtime.data_dir / "storage" / coll["id"] / local["id"] / local["doc"]
        assert path.read_bytes() == b"on disk"
        assert su.get(f"/api/files/fs3/{local['id']}/{local['doc']}").content == b"on disk"
        assert not _keys(moto, f"{coll['id']}/{local['id']}/")
        # the file stored in S3 is not on this disk (PocketBase does not migrate files either)
        assert su.get(f"/api/files/fs3/{in_s3['id']}/{in_s3['doc']}").status_code == 404
    finally:
        _ok(su.patch("/api/settings", json={"s3": {"enabled": True}}))
    assert su.get(f"/api/files/fs3/{in_s3['id']}/{in_s3['doc']}").content == b"in s3"
