"""The `Storage` contract (instance_runtime/tools/filesystem), the same tests for both backends:
`LocalStorage` on a scratch folder and `S3Storage` against a real moto server on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from instance_runtime.tools.filesystem import (
    InvalidKey,
    Storage,
    StorageError,
    check_key,
    sidecar,
)
from instance_runtime.tools.filesystem.local import LocalStorage
from instance_runtime.tools.filesystem.s3 import S3Config, S3Storage
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer

BAD_KEYS = [
    "",
    "/abs/key",
    "a/../b",
    "..",
    "../outside",
    "a/./b",
    "a//b",
    "/",
    "a//",
    "a\\b",
    "..\\outside",
    "a\x00b",
]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def _s3_config(moto: MotoServer, bucket: str, **extra: Any) -> S3Config:
    config = S3Config(bucket, "us-east-1", moto.url, ACCESS_KEY, SECRET_KEY, True)
    return dataclasses.replace(config, **extra)


_buckets = iter(range(1_000_000))


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "storage")
        return
    moto: MotoServer = request.getfixturevalue("moto")
    bucket = f"pf-fs-{next(_buckets)}"
    moto.create_bucket(bucket)
    s3 = S3Storage(_s3_config(moto, bucket))
    yield s3
    s3.close()


def _staged(tmp_path: Path, data: bytes, name: str = "staged.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_put_moves_the_staged_file_and_reads_back(storage: Storage, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = _staged(tmp_path, data)
    storage.put("coll/rec/file.bin", src, "application/octet-stream")
    assert not src.exists()
    with storage.open("coll/rec/file.bin") as reader:
        chunks = list(reader)
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= 1 << 16
    info = storage.stat("coll/rec/file.bin")
    assert info is not None and info.size == len(data)
    assert abs(info.modified - datetime.now(UTC)) < timedelta(minutes=5)
    assert storage.exists("coll/rec/file.bin")
    assert info.content_type == "application/octet-stream"


def test_put_replaces_and_put_bytes(storage: Storage, tmp_path: Path) -> None:
    storage.put("a/b/c.txt", _staged(tmp_path, b"first"))
    storage.put("a/b/c.txt", _staged(tmp_path, b"second"))
    with storage.open("a/b/c.txt") as reader:
        assert reader.read() == b"second"
    storage.put_bytes("a/b/thumbs_c.txt/10x10_c.txt", b"thumb", "text/plain")
    with storage.open("a/b/thumbs_c.txt/10x10_c.txt") as reader:
        assert reader.read() == b"thumb"


def test_ranges(storage: Storage) -> None:
    data = bytes(range(256)) * 40
    storage.put_bytes("r/k", data)
    cases = [(0, 1), (0, 10), (5, 100), (1000, None), (len(data) - 1, len(data)), (0, None)]
    for start, end in cases:
        with storage.open("r/k", start, end) as reader:
            assert reader.read() == data[start:end], (start, end)
    with storage.open("r/k", 7, 7) as reader:
        assert reader.read() == b""
    with storage.open("r/k", 3, 9000) as reader:
        got = b"".join(iter(reader))
    assert got == data[3:9000]
    with storage.open("r/k", 10, 20) as reader:  # read in small pieces, never past the end
        pieces = [reader.read(3) for _ in range(5)]
    assert b"".join(pieces) == data[10:20]


def test_missing_keys(storage: Storage) -> None:
    assert storage.stat("no/such/key") is None
    assert not storage.exists("no/such/key")
    with pytest.raises(FileNotFoundError):
        storage.open("no/such/key")
    with pytest.raises(FileNotFoundError):
        storage.open("no/such/key", 0, 0)
    storage.delete("no/such/key")  # not an error
    storage.delete_prefix("no/such")
    assert storage.list_prefix("no") == []


def test_delete_and_prefixes(storage: Storage) -> None:
    for key in ("c1/r1/a.txt", "c1/r1/b.txt", "c1/r1/thumbs_a.txt/1x1_a.txt", "c1/r10/x.txt"):
        storage.put_bytes(key, key.encode())
    storage.put_bytes("c2/r1/a.txt", b"other")
    assert storage.list_prefix("c1/r1") == [
        "c1/r1/a.txt",
        "c1/r1/b.txt",
        "c1/r1/thumbs_a.txt/1x1_a.txt",
    ]
    assert storage.list_prefix("c1/r1/") == storage.list_prefix("c1/r1")
    storage.delete("c1/r1/b.txt")
    assert not storage.exists("c1/r1/b.txt")
    storage.delete_prefix("c1/r1")  # never c1/r10
    assert storage.list_prefix("c1") == ["c1/r10/x.txt"]
    assert storage.list_prefix("c2") == ["c2/r1/a.txt"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_that_could_escape_are_refused(storage: Storage, tmp_path: Path, key: str) -> None:
    src = _staged(tmp_path, b"x")
    with pytest.raises(InvalidKey):
        check_key(key)
    calls: list[Callable[[], object]] = [
        lambda: storage.put(key, src),
        lambda: storage.put_bytes(key, b"x"),
        lambda: storage.open(key),
        lambda: storage.stat(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
        lambda: storage.delete_prefix(key),
        lambda: storage.list_prefix(key),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    assert src.exists()  # nothing was moved


def test_a_trailing_slash_is_a_prefix_not_a_key(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(InvalidKey):
        storage.put_bytes("a/b/", b"x")
    with pytest.raises(InvalidKey):
        storage.stat("a/b/")
    assert storage.list_prefix("a/b/") == []


def test_local_layout_and_empty_folders(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage = LocalStorage(root)
    storage.put("coll/rec/one.txt", _staged(tmp_path, b"1"))
    storage.put("coll/rec/two.txt", _staged(tmp_path, b"2"))
    assert (root / "coll" / "rec" / "one.txt").read_bytes() == b"1"
    storage.delete("coll/rec/one.txt")
    assert (root / "coll" / "rec").is_dir()
    storage.delete("coll/rec/two.txt")
    assert not (root / "coll" / "rec").exists()  # PocketBase's deleteEmptyRecordDir
    assert (root / "coll").is_dir()
    assert not any(p.name.startswith(".tmp_") for p in root.rglob("*"))


def test_local_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    root = tmp_path / "storage"
    root.mkdir()
    (root / "coll").symlink_to(outside)
    storage = LocalStorage(root)
    with pytest.raises(InvalidKey):
        storage.open("coll/secret.txt")
    with pytest.raises(InvalidKey):
        storage.delete_prefix("coll")
    assert (outside / "secret.txt").exists()


def test_s3_multipart_upload_of_a_big_file(moto: MotoServer, tmp_path: Path) -> None:
    moto.create_bucket("pf-fs-big")
    storage = S3Storage(_s3_config(moto, "pf-fs-big"))
    data = os.urandom(20 << 20)  # > the multipart threshold: several parts
    storage.put("c/r/big.bin", _staged(tmp_path, data), "application/octet-stream")
    head = moto.client().head_object(Bucket="pf-fs-big", Key="c/r/big.bin")
    assert head["ContentLength"] == len(data)
    assert "-" in head["ETag"]  # a multipart object's ETag: md5-of-parts "-" count
    with storage.open("c/r/big.bin", 10 << 20, (10 << 20) + 5) as reader:
        assert reader.read() == data[10 << 20 : (10 << 20) + 5]
    assert moto.pending_uploads("pf-fs-big") == []


def test_s3_virtual_host_config_and_endpoint_without_scheme(moto: MotoServer) -> None:
    config = S3Config.from_settings(
        {
            "bucket": "b",
            "region": "r",
            "endpoint": "s3.example.com/",
            "accessKey": "k",
            "secret": "s",
            "forcePathStyle": False,
        }
    )
    assert config.endpoint_url == "https://s3.example.com"
    assert not config.force_path_style
    assert S3Config.from_settings({"endpoint": "http://h:9000"}).endpoint_url == "http://h:9000"


def test_s3_errors_are_storage_errors(moto: MotoServer, tmp_path: Path) -> None:
    missing_bucket = S3Storage(_s3_config(moto, "pf-fs-no-such-bucket"))
    src = _staged(tmp_path, b"x")
    with pytest.raises(StorageError):
        missing_bucket.put("a/b", src)
    assert src.exists()  # kept for the caller to discard
    with pytest.raises(StorageError):
        missing_bucket.list_prefix("a")
    started = time.monotonic()
    dead = S3Storage(_s3_config(moto, "pf-fs-dead", endpoint="http://127.0.0.1:9"))
    with pytest.raises(StorageError):
        dead.stat("a/b")
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------------------------- attributes
# What PocketBase 0.40.6 wrote itself (its `fileblob` driver) for an upload of `notes.txt`
# holding b"hello\n", and for a thumb (no metadata) of empty content: byte for byte.
PB_NOTES_ATTRS = (
    b'{"user.cache_control":"","user.content_disposition":"","user.content_encoding":"",'
    b'"user.content_language":"","user.content_type":"text/plain; charset=utf-8",'
    b'"user.metadata":{"original-filename":"notes.txt"},"md5":"sZRqySSS0jR8YjW00mERhA=="}'
)
PB_THUMB_ATTRS = (
    b'{"user.cache_control":"","user.content_disposition":"","user.content_encoding":"",'
    b'"user.content_language":"","user.content_type":"image/png","user.metadata":{},'
    b'"md5":"1B2M2Y8AsgTpgAmY7PhCfg=="}'
)
# A name as PocketBase 0.40.6 stored it: raw UTF-8 and no HTML escaping in the sidecar, Go's
# `url.PathEscape` in S3's `x-amz-meta-original-filename`.
ODD_NAME = "Ünïcødé <&> 'x' (1) 100%+ $&+,:;=?@!*~#[]^`{|}.txt"
PB_ODD_NAME_ON_S3 = (
    "%C3%9Cn%C3%AFc%C3%B8d%C3%A9%20%3C&%3E%20%27x%27%20%281%29%20100%25+%20$&+%2C:%3B=%3F@%21"
    "%2A~%23%5B%5D%5E%60%7B%7C%7D.txt"
)


def test_the_content_type_is_kept(storage: Storage, tmp_path: Path) -> None:
    storage.put("c/r/a.png", _staged(tmp_path, b"\x89PNG..."), "image/png", {"x": "y"})
    storage.put_bytes("c/r/thumbs_a.png/1x1_a.png", b"thumb", "image/jpeg")
    found = storage.stat("c/r/a.png")
    assert found is not None and found.content_type == "image/png"
    thumb = storage.stat("c/r/thumbs_a.png/1x1_a.png")
    assert thumb is not None and thumb.content_type == "image/jpeg"
    storage.put("c/r/a.png", _staged(tmp_path, b"GIF89a"), "image/gif")  # replaced with it
    again = storage.stat("c/r/a.png")
    assert again is not None and again.content_type == "image/gif"


def test_local_sidecars_are_pocketbases(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage = LocalStorage(root)
    notes = _staged(tmp_path, b"hello\n")
    storage.put("c/r/notes_x.txt", notes, "text/plain; charset=utf-8",
                {"original-filename": "notes.txt"})  # fmt: skip
    assert (root / "c/r/notes_x.txt.attrs").read_bytes() == PB_NOTES_ATTRS
    storage.put_bytes("c/r/thumbs_a.png/1x1_a.png", b"", "image/png")
    assert (root / "c/r/thumbs_a.png/1x1_a.png.attrs").read_bytes() == PB_THUMB_ATTRS

    storage.put(
        "c/r/odd.txt", _staged(tmp_path, b"odd"), "text/plain", {"Original-Filename": ODD_NAME}
    )
    raw = (root / "c/r/odd.txt.attrs").read_bytes()
    assert f'"user.metadata":{{"original-filename":"{ODD_NAME}"}}'.encode() in raw
    found = sidecar.decode(raw)
    assert found is not None and found.md5 == hashlib.md5(b"odd").digest()

    storage.put("c/r/none.bin", _staged(tmp_path, b"\x00"))  # no type: PocketBase's default
    assert json.loads((root / "c/r/none.bin.attrs").read_bytes())["user.content_type"] == (
        "application/octet-stream"
    )


def test_local_md5_given_by_the_caller_is_the_one_kept(tmp_path: Path) -> None:
    """A caller that hashed the file while staging it passes the digest: the file is not read
    again for it (the digest is taken as given); without one the storage computes it."""
    storage = LocalStorage(tmp_path / "storage")
    data = os.urandom(200_000)
    given = hashlib.md5(b"something else").digest()
    storage.put("c/r/given.bin", _staged(tmp_path, data), "application/octet-stream", None, given)
    storage.put("c/r/computed.bin", _staged(tmp_path, data), "application/octet-stream")
    root = tmp_path / "storage"
    kept = sidecar.decode((root / "c/r/given.bin.attrs").read_bytes())
    computed = sidecar.decode((root / "c/r/computed.bin.attrs").read_bytes())
    assert kept is not None and kept.md5 == given
    assert computed is not None and computed.md5 == hashlib.md5(data).digest()


def test_local_sidecars_are_never_listed_and_go_with_their_files(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage = LocalStorage(root)
    storage.put("c/r1/a.txt", _staged(tmp_path, b"a"), "text/plain")
    storage.put_bytes("c/r1/thumbs_a.txt/1x1_a.txt", b"t", "text/plain")
    storage.put_bytes("c/r1/b.txt", b"b", "text/plain")
    storage.put_bytes("top.zip", b"z", "application/zip")
    assert storage.list_prefix("c/r1") == [
        "c/r1/a.txt",
        "c/r1/b.txt",
        "c/r1/thumbs_a.txt/1x1_a.txt",
    ]
    keys = [e.key for e in storage.entries("")]
    assert keys == ["c/r1/a.txt", "c/r1/b.txt", "c/r1/thumbs_a.txt/1x1_a.txt", "top.zip"]
    assert [e.info.size for e in storage.entries("top")] == [1]
    assert len(list(root.rglob("*.attrs"))) == 4

    storage.delete("c/r1/b.txt")
    assert not (root / "c/r1/b.txt.attrs").exists()
    storage.delete_prefix("c/r1/thumbs_a.txt")
    storage.delete("c/r1/a.txt")
    assert not (root / "c/r1").exists()  # the folder was left empty: no sidecar kept it
    storage.delete("top.zip")
    assert list(root.rglob("*")) == [root / "c"]


def test_local_delete_removes_the_sidecar_pocketbase_wrote(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    folder = root / "c" / "r"
    folder.mkdir(parents=True)
    (folder / "notes_x.txt").write_bytes(b"hello\n")
    (folder / "notes_x.txt.attrs").write_bytes(PB_NOTES_ATTRS)
    storage = LocalStorage(root)
    found = storage.stat("c/r/notes_x.txt")
    assert found is not None and found.content_type == "text/plain; charset=utf-8"
    assert storage.list_prefix("c") == ["c/r/notes_x.txt"]
    storage.delete("c/r/notes_x.txt")
    assert not folder.exists()


def test_local_file_without_a_readable_sidecar_has_no_content_type(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    (root / "c").mkdir(parents=True)
    (root / "c/plain.png").write_bytes(b"\x89PNG")  # stored before sidecars, or copied in
    (root / "c/broken.png").write_bytes(b"\x89PNG")
    (root / "c/broken.png.attrs").write_bytes(b"not json")
    (root / "c/empty.png").write_bytes(b"\x89PNG")
    (root / "c/empty.png.attrs").write_bytes(b'{"user.content_type":""}')
    storage = LocalStorage(root)
    for key in ("c/plain.png", "c/broken.png", "c/empty.png"):
        found = storage.stat(key)
        assert found is not None and found.size == 4 and found.content_type is None, key


def test_local_attrs_keys_are_reserved(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage = LocalStorage(root)
    storage.put_bytes("c/r/a.txt", b"a", "text/plain")
    src = _staged(tmp_path, b"x")
    with pytest.raises(InvalidKey, match="reserved"):
        storage.put("c/r/evil.attrs", src)
    with pytest.raises(InvalidKey, match="reserved"):
        storage.put_bytes("c/r/a.txt.attrs", b"{}")
    assert src.exists()
    assert storage.stat("c/r/a.txt.attrs") is None and not storage.exists("c/r/a.txt.attrs")
    with pytest.raises(FileNotFoundError):
        storage.open("c/r/a.txt.attrs")
    storage.delete("c/r/a.txt.attrs")  # not a key: nothing happens
    assert (root / "c/r/a.txt.attrs").is_file()


def test_local_failed_put_keeps_the_previous_sidecar(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage = LocalStorage(root)
    storage.put_bytes("c/r/a.txt", b"old", "text/plain")
    before = (root / "c/r/a.txt.attrs").read_bytes()
    (root / "c/r/dir").mkdir()
    (root / "c/r/dir/inside").write_bytes(b"x")  # a folder where the file would go
    src = _staged(tmp_path, b"new")
    with pytest.raises(StorageError):
        storage.put("c/r/dir", src, "image/png")
    assert src.exists() and not (root / "c/r/dir.attrs").exists()
    missing = tmp_path / "gone.bin"
    with pytest.raises(StorageError):
        storage.put("c/r/a.txt", missing, "image/png", None, hashlib.md5(b"").digest())
    assert (root / "c/r/a.txt.attrs").read_bytes() == before
    assert not any(p.name.startswith(".tmp_") for p in root.rglob("*"))


def test_s3_object_attributes_are_pocketbases(moto: MotoServer, tmp_path: Path) -> None:
    moto.create_bucket("pf-fs-attrs")
    storage = S3Storage(_s3_config(moto, "pf-fs-attrs"))
    storage.put("c/r/odd.txt", _staged(tmp_path, b"hi"), "text/plain; charset=utf-8",
                {"Original-Filename": ODD_NAME})  # fmt: skip
    storage.put_bytes("c/r/thumbs_a.png/1x1_a.png", b"thumb", "image/png")
    client = moto.client()
    head = client.head_object(Bucket="pf-fs-attrs", Key="c/r/odd.txt")
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert head["Metadata"] == {"original-filename": PB_ODD_NAME_ON_S3}
    thumb = client.head_object(Bucket="pf-fs-attrs", Key="c/r/thumbs_a.png/1x1_a.png")
    assert thumb["ContentType"] == "image/png" and thumb["Metadata"] == {}
    storage.close()
