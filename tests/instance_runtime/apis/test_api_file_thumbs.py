"""`GET /api/files/...?thumb=` against a real runtime process: thumbs of png/jpg/gif/webp of the
sizes PocketBase serves (100x100 and the field's `thumbs`), at PocketBase's path under
`pb_data/storage`, made once and served from there afterwards (also under many concurrent
requests), the original for other sizes and types, Pillow loaded into the process only by the
first thumb, invalid `thumbs` settings refused as PocketBase, the thumbs folder removed with a
replaced file or a deleted record, and thumbs read from and put into S3 storage."""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.instance_runtime.runtime_process import RuntimeProcess
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer

SIZES = ["50x50", "50x20t", "50x20b", "0x50", "50x0", "400x400f", "50x50f"]


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _image(fmt: str, width: int = 300, height: int = 200) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, fmt)
    return out.getvalue()


def _size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def _pillow_loaded(runtime: RuntimeProcess) -> bool:
    assert runtime.process is not None
    maps = Path(f"/proc/{runtime.process.pid}/maps").read_text()
    return "/PIL/" in maps


@pytest.fixture(scope="module")
def pics(runtime: RuntimeProcess) -> dict[str, Any]:
    su = runtime.client(superuser=True)
    fields = [
        {"name": "f", "type": "file", "maxSelect": 9, "maxSize": 10 << 20, "thumbs": SIZES},
        {"name": "one", "type": "file", "maxSelect": 1},
    ]
    return _ok(
        su.post(
            "/api/collections",
            json={"name": "pics", "fields": fields, "viewRule": "", "listRule": ""},
        )
    )


def _folder(runtime: RuntimeProcess, coll: dict[str, Any], rid: str) -> Path:
    return runtime.data_dir / "storage" / str(coll["id"]) / rid


def _stored(*names: str) -> list[str]:
    """What a folder holds for these files: each one and its PocketBase `.attrs` sidecar."""
    return sorted([*names, *(f"{name}.attrs" for name in names)])


def test_pillow_is_loaded_by_the_first_thumb_only(
    runtime: RuntimeProcess, pics: dict[str, Any]
) -> None:
    su = runtime.client(superuser=True)
    rec = _ok(su.post("/api/collections/pics/records", files=[("f", ("a.png", _image("PNG")))]))
    name = rec["f"][0]
    assert su.get(f"/api/files/pics/{rec['id']}/{name}").status_code == 200
    assert not _pillow_loaded(runtime)
    got = su.get(f"/api/files/pics/{rec['id']}/{name}", params={"thumb": "100x100"})
    assert got.status_code == 200 and _size(got.content) == (100, 100)
    assert _pillow_loaded(runtime)


@pytest.mark.parametrize(
    ("fmt", "ext", "thumb_type"),
    [
        ("PNG", "png", "image/png"),
        ("JPEG", "jpg", "image/jpeg"),
        ("GIF", "gif", "image/gif"),
        ("WEBP", "webp", "image/png"),
    ],
)
def test_thumbs_of_each_image_type(
    runtime: RuntimeProcess, pics: dict[str, Any], fmt: str, ext: str, thumb_type: str
) -> None:
    c = runtime.client()
    su = runtime.client(superuser=True)
    rec = _ok(su.post("/api/collections/pics/records", files=[("f", (f"pic.{ext}", _image(fmt)))]))
    name = rec["f"][0]
    url = f"/api/files/pics/{rec['id']}/{name}"
    want = {
        "100x100": (100, 100), "50x50": (50, 50), "50x20t": (50, 20), "50x20b": (50, 20),
        "0x50": (75, 50), "50x0": (50, 33), "400x400f": (300, 200), "50x50f": (50, 33),
    }  # fmt: skip
    folder = _folder(runtime, pics, rec["id"]) / f"thumbs_{name}"
    for size, dims in want.items():
        got = c.get(url, params={"thumb": size})
        assert got.status_code == 200, (size, got.text)
        assert got.headers["content-type"] == thumb_type, size
        assert got.headers["content-disposition"] == f'inline; filename="{size}_{name}"'
        assert got.headers["cache-control"] == "max-age=2592000, stale-while-revalidate=86400"
        assert _size(got.content) == dims, size
        assert (folder / f"{size}_{name}").read_bytes() == got.content
        attrs = json.loads((folder / f"{size}_{name}.attrs").read_bytes())  # what PocketBase reads
        assert attrs["user.content_type"] == thumb_type and attrs["user.metadata"] == {}
    assert sorted(os.listdir(folder)) == _stored(*(f"{s}_{name}" for s in want))

    original = c.get(url).content
    for size in ("70x70", "0x0", "abc", "100x100 "):  # not served as thumbs: the original
        got = c.get(url, params={"thumb": size})
        assert got.status_code == 200
        assert got.headers["content-disposition"] == f'inline; filename="{name}"'
        assert got.content == original
    assert sorted(os.listdir(folder)) == _stored(*(f"{s}_{name}" for s in want))


def test_a_thumb_is_served_from_the_storage_once_made(
    runtime: RuntimeProcess, pics: dict[str, Any]
) -> None:
    su = runtime.client(superuser=True)
    rec = _ok(su.post("/api/collections/pics/records", files=[("f", ("b.png", _image("PNG")))]))
    name = rec["f"][0]
    url = f"/api/files/pics/{rec['id']}/{name}"
    assert _size(su.get(url, params={"thumb": "50x50"}).content) == (50, 50)
    stored = _folder(runtime, pics, rec["id"]) / f"thumbs_{name}" / f"50x50_{name}"
    marker = _image("PNG", 7, 3)
    stored.write_bytes(marker)  # what is stored is what is served: never made again
    got = su.get(url, params={"thumb": "50x50"})
    assert got.content == marker


def test_concurrent_requests_for_one_missing_thumb(
    runtime: RuntimeProcess, pics: dict[str, Any]
) -> None:
    su = runtime.client(superuser=True)
    big = Image.effect_noise((2000, 1500), 60).convert("RGB")
    out = io.BytesIO()
    big.save(out, "PNG")
    rec = _ok(su.post("/api/collections/pics/records", files=[("f", ("big.png", out.getvalue()))]))
    name = rec["f"][0]
    url = f"{runtime.url}/api/files/pics/{rec['id']}/{name}"

    def fetch(_: int) -> httpx.Response:
        return httpx.get(url, params={"thumb": "50x50f"}, timeout=60)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(fetch, range(16)))
    assert {a.status_code for a in answers} == {200}
    assert {a.headers["content-disposition"] for a in answers} == {
        f'inline; filename="50x50f_{name}"'
    }
    assert len({a.content for a in answers}) == 1
    assert _size(answers[0].content) == (50, 37)  # Go truncates 50 / (4 / 3)
    folder = _folder(runtime, pics, rec["id"]) / f"thumbs_{name}"
    assert sorted(os.listdir(folder)) == _stored(f"50x50f_{name}")  # one file, no temporary


def test_other_types_are_served_as_the_original(
    runtime: RuntimeProcess, pics: dict[str, Any]
) -> None:
    su = runtime.client(superuser=True)
    files = [
        ("f", ("notes.txt", b"just text")),
        ("f", ("pic.bmp", _image("BMP"))),
        ("f", ("broken.png", b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)),
    ]
    rec = _ok(su.post("/api/collections/pics/records", files=files))
    for name in rec["f"]:
        url = f"/api/files/pics/{rec['id']}/{name}"
        got = su.get(url, params={"thumb": "100x100"})
        assert got.status_code == 200
        assert got.content == su.get(url).content
        assert f'filename="{name}"' in got.headers["content-disposition"]
    assert not any(
        p.name.startswith("thumbs_") for p in _folder(runtime, pics, rec["id"]).iterdir()
    )
    missing = su.get(f"/api/files/pics/{rec['id']}/gone_abcdefghij.png", params={"thumb": "50x50"})
    assert missing.status_code == 404


def test_thumbs_go_with_a_replaced_file_and_a_deleted_record(
    runtime: RuntimeProcess, pics: dict[str, Any]
) -> None:
    su = runtime.client(superuser=True)
    url = "/api/collections/pics/records"
    rec = _ok(su.post(url, files=[("one", ("first.png", _image("PNG")))]))
    first = rec["one"]
    folder = _folder(runtime, pics, rec["id"])
    assert su.get(f"/api/files/pics/{rec['id']}/{first}", params={"thumb": "100x100"}).is_success
    assert (folder / f"thumbs_{first}" / f"100x100_{first}").is_file()

    replaced = _ok(su.patch(f"{url}/{rec['id']}", files=[("one", ("second.png", _image("PNG")))]))
    second = replaced["one"]
    assert sorted(os.listdir(folder)) == _stored(second)
    thumb = su.get(f"/api/files/pics/{rec['id']}/{second}", params={"thumb": "100x100"})
    assert thumb.headers["content-disposition"] == f'inline; filename="100x100_{second}"'
    assert sorted(os.listdir(folder)) == sorted([*_stored(second), f"thumbs_{second}"])

    assert su.delete(f"{url}/{rec['id']}").status_code == 204
    assert not folder.exists()


def test_invalid_thumbs_settings_are_refused(runtime: RuntimeProcess) -> None:
    su = runtime.client(superuser=True)
    field = {"name": "f", "type": "file", "thumbs": ["0x0", "abc", "10x10", "0x0f", "10x10x"]}
    got = su.post("/api/collections", json={"name": "badthumbs", "fields": [field]})
    assert got.status_code == 400
    not_in = {"code": "validation_not_in_invalid", "message": "Must not be in list."}
    no_match = {"code": "validation_match_invalid", "message": "Must be in a valid format."}
    thumbs = {"0": not_in, "1": no_match, "3": not_in, "4": no_match}
    assert got.json()["data"] == {"fields": {"1": {"thumbs": thumbs}}}  # field 0 is the id


def test_thumbs_in_s3() -> None:
    """With S3 storage the original is read from the bucket and the thumb put into it (with its
    content type), served from there, and removed with its record."""
    bucket = "pf-runtime-thumbs"
    with MotoServer() as moto, RuntimeProcess.started() as runtime:
        moto.create_bucket(bucket)
        su = runtime.client(superuser=True)
        s3 = {
            "enabled": True, "bucket": bucket, "region": "us-east-1", "endpoint": moto.url,
            "accessKey": ACCESS_KEY, "secret": SECRET_KEY, "forcePathStyle": True,
        }  # fmt: skip
        _ok(su.patch("/api/settings", json={"s3": s3}))
        fields = [{"name": "f", "type": "file", "maxSelect": 1, "thumbs": ["0x40"]}]
        coll = _ok(su.post("/api/collections", json={"name": "s3pics", "fields": fields}))
        rec = _ok(
            su.post("/api/collections/s3pics/records", files=[("f", ("p.webp", _image("WEBP")))])
        )
        name, rid = rec["f"], rec["id"]
        got = su.get(f"/api/files/s3pics/{rid}/{name}", params={"thumb": "0x40"})
        assert got.status_code == 200 and _size(got.content) == (60, 40)
        assert got.headers["content-type"] == "image/png"
        key = f"{coll['id']}/{rid}/thumbs_{name}/0x40_{name}"
        head = moto.client().head_object(Bucket=bucket, Key=key)
        assert head["ContentType"] == "image/png"
        assert not (runtime.data_dir / "storage" / coll["id"]).exists()
        marker = _image("PNG", 5, 5)
        moto.client().put_object(Bucket=bucket, Key=key, Body=marker, ContentType="image/png")
        assert su.get(f"/api/files/s3pics/{rid}/{name}", params={"thumb": "0x40"}).content == marker

        assert su.delete(f"/api/collections/s3pics/records/{rid}").status_code == 204
        deadline = time.monotonic() + 10
        while moto.client().list_objects_v2(Bucket=bucket, Prefix=f"{coll['id']}/").get("KeyCount"):
            assert time.monotonic() < deadline, "the record's objects stayed in the bucket"
            time.sleep(0.05)
