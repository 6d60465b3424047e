"""File fields (multipart uploads through the SDK) and GET /api/files downloads; and record
files in S3, side by side: both engines on one moto server (a bucket each), the same uploads,
downloads (ranges, conditional requests), `settings/test/s3` calls and deletions compared."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import FILES, VIEW_FILES
from tests.support.engines import ENGINES, pocketfleet_runtime_available, running_engine
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer


@pytest.mark.parametrize("scenario", FILES)
def test_files(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)


@pytest.mark.parametrize("scenario", VIEW_FILES)
def test_view_and_hidden_files(conformance: Conformance, engine: str, scenario: str) -> None:
    """Files through view collections (served from the source record) and hidden file fields."""
    conformance.check(scenario, engine)


# --- S3 storage, side by side: both engines on one moto server, one bucket each -------------

S3_EMAIL, S3_PASSWORD = "s3-admin@example.com", "s3-admin-pass-1234"
S3_HEADERS = (
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "cache-control",
    "content-security-policy",
    "x-content-type-options",
)


@dataclass
class S3Side:
    engine: str
    bucket: str
    client: httpx.Client


@pytest.fixture(scope="module")
def s3_sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[S3Side]]:
    if not pocketfleet_runtime_available():
        pytest.skip("`pocketfleet runtime serve` does not exist yet")
    with MotoServer() as moto, contextlib.ExitStack() as stack:
        sides = []
        for engine in ENGINES:
            bucket = f"pf-conformance-{engine}"
            moto.create_bucket(bucket)
            root = tmp_path_factory.mktemp(f"s3-{engine}")
            process = stack.enter_context(running_engine(engine, root, S3_EMAIL, S3_PASSWORD))
            client = stack.enter_context(httpx.Client(base_url=process.url, timeout=60))
            token = client.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": S3_EMAIL, "password": S3_PASSWORD},
            ).json()["token"]
            client.headers["Authorization"] = token
            s3 = {
                "enabled": True, "bucket": bucket, "region": "us-east-1", "endpoint": moto.url,
                "accessKey": ACCESS_KEY, "secret": SECRET_KEY, "forcePathStyle": True,
            }  # fmt: skip
            assert client.patch("/api/settings", json={"s3": s3}).status_code == 200
            sides.append(S3Side(engine, bucket, client))
        _S3_STATE["moto"] = moto
        yield sides


_S3_STATE: dict[str, Any] = {}


def _objects(side: S3Side, prefix: str) -> list[str]:
    moto: MotoServer = _S3_STATE["moto"]
    listed = moto.client().list_objects_v2(Bucket=side.bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def _answer(response: httpx.Response, names: dict[str, str]) -> dict[str, Any]:
    """Status, the headers that matter, and the body with names and boundaries masked."""
    headers = {k: response.headers[k] for k in S3_HEADERS if k in response.headers}
    disposition = response.headers.get("content-disposition", "")
    body = response.content
    ctype = headers.get("content-type", "")
    if ctype.startswith("multipart/byteranges; boundary="):
        boundary = ctype.split("=", 1)[1]
        body = body.replace(boundary.encode(), b"BOUNDARY")
        headers["content-type"] = "multipart/byteranges; boundary=BOUNDARY"
    for real, alias in names.items():
        disposition = disposition.replace(real, alias)
    if response.headers.get("content-type", "").startswith("application/json"):
        text = response.text
        for real, alias in names.items():
            text = text.replace(real, alias)
        return {"status": response.status_code, "headers": headers, "json": json.loads(text)}
    return {
        "status": response.status_code,
        "headers": headers,
        "disposition": disposition,
        "body": hashlib.sha256(body).hexdigest(),
        "last_modified": "last-modified" in response.headers,
    }


def _wait_for(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _s3_trace(side: S3Side) -> list[Any]:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20
    c = side.client
    trace: list[Any] = []
    names: dict[str, str] = {}
    trace.append(_answer(c.post("/api/settings/test/s3", json={"filesystem": "storage"}), {}))
    for body in ({}, {"filesystem": "x"}, {"filesystem": "backups"}):
        trace.append(_answer(c.post("/api/settings/test/s3", json=body), {}))
    field = {"name": "doc", "type": "file", "maxSelect": 2, "maxSize": 1 << 20}
    coll = c.post("/api/collections", json={"name": "s3docs", "fields": [field]}).json()
    names[coll["id"]] = "COLL"
    rec = c.post(
        "/api/collections/s3docs/records",
        files=[("doc", ("pic.png", png)), ("doc", ("notes.txt", b"hello notes"))],
    ).json()
    names[rec["id"]] = "REC"
    for i, name in enumerate(rec["doc"]):
        names[name] = f"FILE{i}"
    prefix = f"{coll['id']}/{rec['id']}/"
    keys = [k.removeprefix(prefix) for k in _objects(side, prefix)]
    trace.append(sorted(names.get(k, k) for k in keys))
    moto: MotoServer = _S3_STATE["moto"]
    for name in rec["doc"]:
        head = moto.client().head_object(Bucket=side.bucket, Key=prefix + name)
        trace.append({"type": head["ContentType"], "meta": head["Metadata"]})
    url = f"/api/files/s3docs/{rec['id']}/{rec['doc'][0]}"
    first = c.get(url)
    trace.append(_answer(first, names))
    trace.append(_answer(c.get(f"/api/files/s3docs/{rec['id']}/{rec['doc'][1]}"), names))
    trace.append(_answer(c.get(url, params={"download": "1"}), names))
    for ranges in ("bytes=10-19", "bytes=-7", "bytes=100-", "bytes=0-1,8-9", "bytes=9999-",
                   "bytes=x-", "bytes=0-99999999"):  # fmt: skip
        trace.append(_answer(c.get(url, headers={"Range": ranges}), names))
    modified = first.headers["last-modified"]
    trace.append(_answer(c.get(url, headers={"If-Modified-Since": modified}), names))
    trace.append(_answer(c.head(url), names))
    trace.append(_answer(c.get(f"/api/files/s3docs/{rec['id']}/missing.txt"), names))
    kept = rec["doc"][1]
    changed = c.patch(
        f"/api/collections/s3docs/records/{rec['id']}",
        data={"@jsonPayload": json.dumps({"doc-": rec["doc"][0]})},
    ).json()
    trace.append(changed["doc"] == [kept])
    trace.append(_wait_for(lambda: _objects(side, prefix) == [prefix + kept]))
    assert c.delete(f"/api/collections/s3docs/records/{rec['id']}").status_code == 204
    trace.append(_wait_for(lambda: _objects(side, prefix) == []))
    return trace


def test_s3_files_side_by_side(s3_sides: list[S3Side]) -> None:
    traces = {side.engine: _s3_trace(side) for side in s3_sides}
    reference, candidate = traces["pocketbase"], traces["pocketfleet"]
    for step, (want, got) in enumerate(zip(reference, candidate, strict=True)):
        assert got == want, f"step {step}: pocketbase {want!r} != pocketfleet {got!r}"
