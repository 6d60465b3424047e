"""Record files on disk, against a real runtime process: uploads land in
`pb_data/storage/{collectionId}/{recordId}/`, replaced and removed files and a deleted record's
folder are gone after the commit, a refused write leaves nothing (not even a staged upload),
and a large upload streams through (it is stored byte for byte)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from instance_runtime.core.files import STAGING, detect_mime, normalize_name
from tests.instance_runtime.runtime_process import RuntimeProcess


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def coll(runtime: RuntimeProcess) -> dict[str, Any]:
    su = runtime.client(superuser=True)
    fields = [
        {"name": "title", "type": "text"},
        {"name": "doc", "type": "file", "maxSelect": 1, "maxSize": 64 << 20},
        {"name": "docs", "type": "file", "maxSelect": 2, "maxSize": 1000},
    ]
    return _ok(
        su.post("/api/collections", json={"name": "fdisk", "type": "base", "fields": fields})
    )


def _folder(runtime: RuntimeProcess, coll: dict[str, Any], rid: str) -> Path:
    return runtime.data_dir / "storage" / coll["id"] / rid


def _stored(*names: str) -> list[str]:
    """What a folder holds for these files: each one and its PocketBase `.attrs` sidecar."""
    return sorted([*names, *(f"{name}.attrs" for name in names)])


def _staging(runtime: RuntimeProcess) -> list[str]:
    folder = runtime.data_dir / STAGING
    return os.listdir(folder) if folder.exists() else []


def test_files_on_disk_follow_the_record(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    su = runtime.client(superuser=True)
    url = "/api/collections/fdisk/records"
    created = _ok(
        su.post(
            url,
            data={"title": "a"},
            files=[
                ("doc", ("one.txt", b"one")),
                ("docs", ("x.txt", b"x")),
                ("docs", ("y.txt", b"y")),
            ],
        )
    )
    folder = _folder(runtime, coll, created["id"])
    assert sorted(os.listdir(folder)) == _stored(created["doc"], *created["docs"])
    assert (folder / created["doc"]).read_bytes() == b"one"

    replaced = _ok(su.patch(f"{url}/{created['id']}", files=[("doc", ("two.txt", b"two"))]))
    removed = _ok(
        su.patch(
            f"{url}/{created['id']}",
            data={"@jsonPayload": json.dumps({"docs-": created["docs"][0]})},
        )
    )
    assert sorted(os.listdir(folder)) == _stored(replaced["doc"], *removed["docs"])
    assert removed["docs"] == created["docs"][1:]

    too_big = su.patch(f"{url}/{created['id']}", files=[("docs+", ("big.txt", b"z" * 2000))])
    assert too_big.status_code == 400
    assert too_big.json()["data"]["docs"]["code"] == "validation_file_size_limit"
    assert sorted(os.listdir(folder)) == _stored(replaced["doc"], *removed["docs"])
    assert _staging(runtime) == []

    assert su.delete(f"{url}/{created['id']}").status_code == 204
    assert not folder.exists()


def test_a_large_upload_is_stored_whole(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    su = runtime.client(superuser=True)
    payload = os.urandom(1 << 20) * 20  # 20 MiB: past starlette's 1 MiB in-memory spool
    created = _ok(
        su.post("/api/collections/fdisk/records", files=[("doc", ("big.bin", payload))], timeout=60)
    )
    got = su.get(f"/api/files/fdisk/{created['id']}/{created['doc']}", timeout=60)
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(payload).digest()
    assert _staging(runtime) == []
    # PocketBase's sidecar: the md5 (hashed while the upload was staged) and the original name
    sidecar = _folder(runtime, coll, created["id"]) / f"{created['doc']}.attrs"
    attrs = json.loads(sidecar.read_bytes())
    assert attrs["md5"] == base64.b64encode(hashlib.md5(payload).digest()).decode()
    assert attrs["user.content_type"] == "application/octet-stream"
    assert attrs["user.metadata"] == {"original-filename": "big.bin"}


def test_a_name_the_storage_reserves_is_refused_as_pocketbase_does(
    runtime: RuntimeProcess, coll: dict[str, Any]
) -> None:
    """`*.attrs` names PocketBase's sidecars on disk: an upload named so cannot be stored."""
    su = runtime.client(superuser=True)
    url = "/api/collections/fdisk/records"
    before = su.get(url, params={"perPage": 1}).json()["totalItems"]
    refused = su.post(url, data={"title": "x"}, files=[("doc", ("evil.attrs", b"{}"))])
    assert refused.status_code == 400
    assert refused.json() == {"data": {}, "message": "Failed to create record.", "status": 400}
    assert su.get(url, params={"perPage": 1}).json()["totalItems"] == before
    rec = _ok(su.post(url, data={"title": "y"}))
    updated = su.patch(f"{url}/{rec['id']}", files=[("doc", ("evil.attrs", b"{}"))])
    assert updated.status_code == 400
    assert updated.json()["message"] == "Failed to update record."
    assert not _folder(runtime, coll, rec["id"]).exists()
    assert _staging(runtime) == []


@pytest.mark.parametrize(
    ("original", "pattern"),
    [
        ("My Report (final).TXT", r"my_report_final_[a-z0-9]{10}\.TXT"),
        ("archive.tar.gz", r"archive_[a-z0-9]{10}\.tar\.gz"),
        ("ab.txt", r"ab[a-z0-9]{10}_[a-z0-9]{10}\.txt"),
        ("camelCaseName.png", r"camel_case_name_[a-z0-9]{10}\.png"),
        ("noext", r"noext_[a-z0-9]{10}\.txt"),
    ],
)
def test_names_are_sanitised_with_a_random_part(original: str, pattern: str) -> None:
    assert re.fullmatch(pattern, normalize_name(original, "text/plain; charset=utf-8"))


def test_content_sniffing() -> None:
    assert detect_mime(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert detect_mime(b"hello") == "text/plain; charset=utf-8"
    assert detect_mime(b'{"a": 1}') == "application/json"
    assert detect_mime(b"\x00\x01\xff") == "application/octet-stream"
