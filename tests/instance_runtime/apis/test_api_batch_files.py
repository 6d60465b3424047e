"""Uploads in `POST /api/batch`, against a real runtime process: files under `requests.N.KEY`
and `requests[N].KEY` land in the records' folders (twice-sanitised names, as PocketBase),
modifiers work, a request's files replace its body value of the same key; a failing batch
leaves no file behind (neither its new files nor any removal of old ones), and nothing staged
stays in `.pf_uploads` either way."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from instance_runtime.core.files import STAGING
from tests.instance_runtime.runtime_process import RuntimeProcess

URL = "/api/collections/bfiles/records"
# a name sanitised twice: `stem_<10 random>_<10 random>.ext`
TWICE = re.compile(r"^(?P<stem>[a-z0-9_]+?)_[a-z0-9]{10}_[a-z0-9]{10}\.txt$")


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def coll(runtime: RuntimeProcess) -> dict[str, Any]:
    su = runtime.client(superuser=True)
    _ok(su.patch("/api/settings", json={"batch": {"enabled": True, "maxRequests": 20}}))
    fields = [
        {"name": "title", "type": "text"},
        {"name": "doc", "type": "file", "maxSelect": 1, "maxSize": 100},
        {"name": "docs", "type": "file", "maxSelect": 3, "mimeTypes": ["text/plain"]},
    ]
    body = {"name": "bfiles", "fields": fields, "listRule": "", "viewRule": "", "createRule": ""}
    created: dict[str, Any] = _ok(su.post("/api/collections", json=body))
    return created


def _batch(
    client: httpx.Client, requests: list[dict[str, Any]], files: list[Any]
) -> httpx.Response:
    payload = {"@jsonPayload": json.dumps({"requests": requests})}
    return client.post("/api/batch", data=payload, files=files)


def _create(body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"method": "POST", "url": URL, "body": body or {}}


def _patch(rid: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"method": "PATCH", "url": f"{URL}/{rid}", "body": body or {}}


def _stored(runtime: RuntimeProcess, coll: dict[str, Any]) -> set[str]:
    """Every stored file of the collection, as `recordId/name` (not their `.attrs` sidecars)."""
    root = runtime.data_dir / "storage" / coll["id"]
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".attrs"
    }


def _staging(runtime: RuntimeProcess) -> list[str]:
    folder: Path = runtime.data_dir / STAGING
    return os.listdir(folder) if folder.exists() else []


def _stem(name: str) -> str:
    match = TWICE.match(name)
    assert match, name
    return match.group("stem")


def test_files_of_each_request_are_stored(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    su = runtime.client(superuser=True)
    results = _ok(
        _batch(
            su,
            [_create({"title": "one"}), _create({"title": "two"}), _create({"title": "three"})],
            [
                ("requests.0.doc", ("hello.txt", b"hello")),
                ("requests[1].docs", ("alpha.txt", b"alpha")),
                ("requests.1.docs", ("beta.txt", b"beta")),
                ("requests.7.doc", ("ignored.txt", b"no such request")),
                ("requests.02.doc", ("ignored.txt", b"not the prefix of request 2")),
            ],
        )
    )
    assert [r["status"] for r in results] == [200, 200, 200]
    assert list(results[0]) == ["body", "status"]
    one, two, three = (r["body"] for r in results)
    assert _stem(one["doc"]) == "hello"
    assert sorted(_stem(n) for n in two["docs"]) == ["alpha", "beta"]
    assert three["doc"] == "" and three["docs"] == []
    folder = runtime.data_dir / "storage" / coll["id"]
    assert (folder / one["id"] / one["doc"]).read_bytes() == b"hello"
    assert sorted((folder / two["id"] / n).read_bytes() for n in two["docs"]) == [b"alpha", b"beta"]
    assert not (folder / three["id"]).exists()
    download = su.get(f"/api/files/bfiles/{one['id']}/{one['doc']}")
    assert download.status_code == 200 and download.content == b"hello"
    assert _staging(runtime) == []


def test_modifiers_and_plain_keys(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    su = runtime.client(superuser=True)
    (created,) = _ok(_batch(su, [_create()], [("requests.0.docs", ("first.txt", b"1"))]))
    rid, first = created["body"]["id"], created["body"]["docs"][0]
    (appended,) = _ok(_batch(su, [_patch(rid)], [("requests.0.docs+", ("last.txt", b"2"))]))
    (prepended,) = _ok(_batch(su, [_patch(rid)], [("requests.0.+docs", ("zero.txt", b"0"))]))
    stems = [_stem(n) for n in prepended["body"]["docs"]]
    assert [_stem(n) for n in appended["body"]["docs"]] == ["first", "last"]
    assert stems == ["zero", "first", "last"]
    # a `docs-` file part is no removal and no upload (PocketBase reads docs, +docs, docs+)
    (same,) = _ok(_batch(su, [_patch(rid)], [("requests.0.docs-", ("minus.txt", b"-"))]))
    assert same["body"]["docs"] == prepended["body"]["docs"]
    # files under a key replace the body's value of that key: the kept name is dropped
    (replaced,) = _ok(
        _batch(su, [_patch(rid, {"docs": [first]})], [("requests.0.docs", ("new.txt", b"n"))])
    )
    assert [_stem(n) for n in replaced["body"]["docs"]] == ["new"]
    assert {n for n in _stored(runtime, coll) if n.startswith(rid)} == {
        f"{rid}/{replaced['body']['docs'][0]}"
    }
    assert _staging(runtime) == []


def _failure(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["message"] == "Batch transaction failed."
    ((index, failed),) = body["data"]["requests"].items()
    assert failed["code"] == "batch_request_failed"
    response_body: dict[str, Any] = failed["response"]
    return index, response_body


def test_a_failed_batch_leaves_no_file(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    su = runtime.client(superuser=True)
    (kept,) = _ok(_batch(su, [_create({"title": "kept"})], [("requests.0.doc", ("old.txt", b"o"))]))
    rid, old_doc = kept["body"]["id"], kept["body"]["doc"]
    before = _stored(runtime, coll)

    too_big = _batch(
        su,
        [_create({"title": "rolled back"}), _patch(rid), _create({"title": "too big"})],
        [
            ("requests.0.docs", ("new.txt", b"new")),
            ("requests.1.doc", ("replacement.txt", b"r")),
            ("requests.2.doc", ("big.txt", b"x" * 200)),
        ],
    )
    index, answer = _failure(too_big)
    assert index == "2"
    error = answer["data"]["doc"]
    assert error["code"] == "validation_file_size_limit"
    # the once-sanitised name is the "original" one of a batch upload, as in PocketBase
    assert re.fullmatch(r"big_[a-z0-9]{10}\.txt", error["params"]["file"])
    assert error["params"]["maxSize"] == 100

    index, answer = _failure(
        _batch(
            su,
            [_create(), _create()],
            [("requests.0.doc", ("a1.txt", b"a")), ("requests.1.docs", ("bin.bin", b"\x00\x01"))],
        )
    )
    assert (index, answer["data"]["docs"]["code"]) == ("1", "validation_invalid_mime_type")
    index, answer = _failure(
        _batch(su, [_create()], [("requests.0.docs", (f"f{i}.txt", b"t")) for i in range(4)])
    )
    assert (index, answer["data"]["docs"]["code"]) == ("0", "validation_too_many_files")
    index, answer = _failure(
        _batch(
            su,
            [_create(), {"method": "POST", "url": "/api/collections/nope/records"}],
            [("requests.0.doc", ("gone.txt", b"g"))],
        )
    )
    assert (index, answer["status"]) == ("1", 404)
    # a delete rolled back keeps the record's files
    index, _answer = _failure(
        _batch(su, [{"method": "DELETE", "url": f"{URL}/{rid}"}, _patch("missingmissing1")], [])
    )
    assert index == "1"

    assert _stored(runtime, coll) == before
    view = _ok(su.get(f"{URL}/{rid}"))
    assert view["doc"] == old_doc
    assert su.get(f"/api/files/bfiles/{rid}/{old_doc}").content == b"o"
    titles = {r["title"] for r in _ok(su.get(URL, params={"perPage": 200}))["items"]}
    assert not titles & {"rolled back", "too big"}
    assert _staging(runtime) == []


def test_upsert_with_files(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    su = runtime.client(superuser=True)
    put = {"method": "PUT", "url": URL}
    (made,) = _ok(
        _batch(su, [{**put, "body": {"title": "up"}}], [("requests.0.doc", ("up1.txt", b"1"))])
    )
    rid = made["body"]["id"]
    (updated,) = _ok(
        _batch(su, [{**put, "body": {"id": rid}}], [("requests.0.doc", ("up2.txt", b"2"))])
    )
    assert updated["body"]["id"] == rid and _stem(updated["body"]["doc"]) == "up2"
    assert {n for n in _stored(runtime, coll) if n.startswith(rid)} == {
        f"{rid}/{updated['body']['doc']}"
    }
