"""`GET /api/files/{view}/{id}/{name}` for view collections, against a real runtime process: the
file is found in the source record of the view's file field (plain, aliased, joined, a view of
a view, multiple files), a protected one follows the view's own viewRule, and names the view
record does not hold are 404."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess

NOT_FOUND = {"data": {}, "message": "The requested resource wasn't found.", "status": 404}
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8"
    "cfc0f01f0005000201d1c3a01f0000000049454e44ae426082"
)


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def data(runtime: RuntimeProcess) -> dict[str, Any]:
    su = runtime.client(superuser=True)
    open_rules = {"listRule": "", "viewRule": ""}
    posts = _ok(
        su.post(
            "/api/collections",
            json={
                "name": "vposts",
                "fields": [
                    {"name": "title", "type": "text"},
                    {"name": "cover", "type": "file", "maxSelect": 1},
                    {"name": "gallery", "type": "file", "maxSelect": 3},
                    {"name": "secret", "type": "file", "maxSelect": 1, "protected": True},
                ],
                **open_rules,
            },
        )
    )
    notes = {
        "name": "vnotes",
        "fields": [
            {"name": "body", "type": "text"},
            {"name": "post", "type": "relation", "collectionId": posts["id"], "maxSelect": 1},
        ],
        **open_rules,
    }
    _ok(su.post("/api/collections", json=notes))
    post = _ok(
        su.post(
            "/api/collections/vposts/records",
            data={"title": "first"},
            files=[
                ("cover", ("cover.txt", b"the cover")),
                ("gallery", ("one.txt", b"one")),
                ("gallery", ("pixel.png", PNG)),
                ("secret", ("secret.txt", b"secret!")),
            ],
        )
    )
    other = _ok(
        su.post(
            "/api/collections/vposts/records",
            data={"title": "hidden"},
            files=[("cover", ("other.txt", b"other cover"))],
        )
    )
    note = _ok(su.post("/api/collections/vnotes/records", json={"body": "n", "post": post["id"]}))
    views = {
        "vplain": "SELECT id, title, cover, gallery FROM vposts WHERE title = 'first'",
        "valias": "select p.id, p.cover as picture, p.gallery as pictures from vposts p",
        "vnested": "select id, picture from valias",
        "vjoined": "SELECT n.id, p.cover AS postCover FROM vnotes n JOIN vposts p ON p.id = n.post",
    }
    fields = {}
    for name, query in views.items():
        made = _ok(
            su.post(
                "/api/collections",
                json={"name": name, "type": "view", "viewQuery": query, **open_rules},
            )
        )
        fields[name] = {f["name"]: f["type"] for f in made["fields"]}
    _ok(
        su.post(
            "/api/collections",
            json={
                "name": "vprivate",
                "type": "view",
                "viewQuery": "select id, secret from vposts",
                "listRule": None,
                "viewRule": None,
            },
        )
    )
    return {"post": post, "other": other, "note": note, "fields": fields}


def _get(runtime: RuntimeProcess, path: str, **params: str) -> httpx.Response:
    return httpx.get(runtime.url + path, params=params, timeout=30)


def test_view_fields_keep_the_file_type(data: dict[str, Any]) -> None:
    assert data["fields"]["vplain"]["cover"] == "file"
    assert data["fields"]["valias"] == {"id": "text", "picture": "file", "pictures": "file"}
    assert data["fields"]["vnested"]["picture"] == "file"
    assert data["fields"]["vjoined"]["postCover"] == "file"  # a joined table's field


def test_files_come_from_the_source_record(runtime: RuntimeProcess, data: dict[str, Any]) -> None:
    post, note = data["post"], data["note"]
    cases = [
        ("vplain", post["id"], post["cover"], b"the cover"),
        ("vplain", post["id"], post["gallery"][0], b"one"),
        ("valias", post["id"], post["cover"], b"the cover"),
        ("valias", post["id"], post["gallery"][1], PNG),
        ("vnested", post["id"], post["cover"], b"the cover"),
        ("vjoined", note["id"], post["cover"], b"the cover"),  # the view record is the note
    ]
    for view, rid, name, content in cases:
        response = _get(runtime, f"/api/files/{view}/{rid}/{name}")
        assert response.status_code == 200, (view, response.text)
        assert response.content == content
        assert response.headers["content-disposition"].endswith(f'filename="{name}"')
    png = _get(runtime, f"/api/files/valias/{post['id']}/{post['gallery'][1]}")
    assert png.headers["content-type"] == "image/png"
    assert png.headers["content-disposition"].startswith("inline")


def test_names_the_view_record_does_not_hold(runtime: RuntimeProcess, data: dict[str, Any]) -> None:
    post, other = data["post"], data["other"]
    missing = [
        f"/api/files/valias/{post['id']}/{other['cover']}",  # another record's file
        f"/api/files/valias/{post['id']}/nothere_abcdefghij.txt",
        f"/api/files/vplain/{other['id']}/{other['cover']}",  # not a record of this view
        f"/api/files/vplain/{post['id']}/{post['secret']}",  # not a column of this view
    ]
    for path in missing:
        response = _get(runtime, path)
        assert (response.status_code, response.json()) == (404, NOT_FOUND), path


def test_a_protected_file_follows_the_view_rule(
    runtime: RuntimeProcess, data: dict[str, Any]
) -> None:
    path = f"/api/files/vprivate/{data['post']['id']}/{data['post']['secret']}"
    assert _get(runtime, path).status_code == 404
    token = _ok(runtime.client(superuser=True).post("/api/files/token"))["token"]
    granted = _get(runtime, path, token=token)
    assert granted.status_code == 200 and granted.content == b"secret!"
