"""The `Storage` contract (instance_runtime/tools/filesystem), the same tests for both backends:
`LocalStorage` on a scratch folder and `S3Storage` against a real moto server on loopback."""

from __future__ import annotations

import dataclasses
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
    if isinstance(storage, S3Storage):
        assert info.content_type == "application/octet-stream"
    else:
        assert info.content_type is None


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
