"""Uploads to a `hidden` file field, against a real runtime process: ignored for anyone but a
superuser (no validation, nothing stored, as PocketBase), in record requests and in a batch;
a superuser's upload is validated and stored."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess

URL = "/api/collections/hfiles/records"


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def coll(runtime: RuntimeProcess) -> dict[str, Any]:
    su = runtime.client(superuser=True)
    _ok(su.patch("/api/settings", json={"batch": {"enabled": True, "maxRequests": 20}}))
    fields = [
        {"name": "title", "type": "text"},
        {"name": "secret", "type": "file", "maxSelect": 1, "maxSize": 10, "hidden": True},
    ]
    rules = {"listRule": "", "viewRule": "", "createRule": "", "updateRule": ""}
    created: dict[str, Any] = _ok(
        su.post("/api/collections", json={"name": "hfiles", "fields": fields, **rules})
    )
    return created


def _stored(runtime: RuntimeProcess, coll: dict[str, Any], rid: str) -> list[str]:
    folder = runtime.data_dir / "storage" / coll["id"] / rid
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".attrs")  # not the sidecars


def test_guests_uploads_are_ignored(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    guest, su = runtime.client(), runtime.client(superuser=True)
    for content in (b"small", b"far too big for the field"):
        made = _ok(guest.post(URL, data={"title": "g"}, files=[("secret", ("s.txt", content))]))
        assert "secret" not in made
        assert _ok(su.get(f"{URL}/{made['id']}"))["secret"] == ""
        assert _stored(runtime, coll, made["id"]) == []
        updated = _ok(guest.patch(f"{URL}/{made['id']}", files=[("secret", ("s.txt", content))]))
        assert "secret" not in updated
        assert _stored(runtime, coll, made["id"]) == []
    payload = {"requests": [{"method": "POST", "url": URL, "body": {"title": "b"}}]}
    (result,) = _ok(
        guest.post(
            "/api/batch",
            data={"@jsonPayload": json.dumps(payload)},
            files=[("requests.0.secret", ("s.txt", b"far too big for the field"))],
        )
    )
    assert result["status"] == 200 and "secret" not in result["body"]
    assert _stored(runtime, coll, result["body"]["id"]) == []


def test_a_superusers_upload_counts(runtime: RuntimeProcess, coll: dict[str, Any]) -> None:
    su = runtime.client(superuser=True)
    made = _ok(su.post(URL, files=[("secret", ("secret.txt", b"small"))]))
    assert made["secret"].startswith("secret_")
    assert _stored(runtime, coll, made["id"]) == [made["secret"]]
    refused = su.post(URL, files=[("secret", ("big.txt", b"far too big for the field"))])
    assert refused.status_code == 400
    assert refused.json()["data"]["secret"]["code"] == "validation_file_size_limit"
