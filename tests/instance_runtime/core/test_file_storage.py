"""`core.file_storage`: the backend follows the app's settings (local disk, or S3 on a real moto
server), is cached until `on_settings_reload`, and code holding only a connection gets the
same backend (or, for an app that was never bound, the one its stored settings name)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from instance_runtime.core import file_storage
from instance_runtime.core.app import App
from instance_runtime.core.events import LifecycleEvent
from instance_runtime.tools.filesystem import Storage
from instance_runtime.tools.filesystem.local import LocalStorage
from instance_runtime.tools.filesystem.s3 import S3Storage
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        server.create_bucket("pf-core-storage")
        yield server


def _s3(moto: MotoServer, enabled: bool = True) -> dict[str, Any]:
    return {
        "enabled": enabled,
        "bucket": "pf-core-storage",
        "region": "us-east-1",
        "endpoint": moto.url,
        "accessKey": ACCESS_KEY,
        "secret": SECRET_KEY,
        "forcePathStyle": True,
    }


def _with_s3(app: App, s3: dict[str, Any]) -> None:
    asyncio.run(app.save_settings({**app.settings.current, "s3": s3}))


def _from_connection(app: App) -> Storage:
    return app.db.read_sync(lambda conn: file_storage.for_connection(conn, app.data_dir))


def test_the_backend_follows_the_settings(tmp_path: Path, moto: MotoServer) -> None:
    app = App(tmp_path / "pb_data")
    try:
        holder = file_storage.bind(app)
        assert file_storage.bind(app) is holder
        local = holder.get()
        assert isinstance(local, LocalStorage)
        assert local.root == tmp_path / "pb_data" / "storage"
        assert holder.get() is local  # cached
        assert _from_connection(app) is local

        _with_s3(app, _s3(moto))
        s3 = holder.get()
        assert isinstance(s3, S3Storage) and s3.bucket == "pf-core-storage"
        assert _from_connection(app) is s3

        done: list[str] = []
        holder.after_commit(s3, lambda s: done.append(type(s).__name__))
        holder.drain()
        assert done == ["S3Storage"]

        _with_s3(app, _s3(moto, enabled=False))
        assert isinstance(holder.get(), LocalStorage)
        app.hooks.on_terminate.trigger(LifecycleEvent(app), lambda e: None)
    finally:
        app.close()


def test_an_unbound_app_uses_its_stored_settings(tmp_path: Path, moto: MotoServer) -> None:
    app = App(tmp_path / "pb_data")
    try:
        assert isinstance(_from_connection(app), LocalStorage)
        _with_s3(app, _s3(moto))  # stored in the database; no holder was bound
        assert isinstance(_from_connection(app), S3Storage)
    finally:
        app.close()


def test_check_s3(moto: MotoServer) -> None:
    file_storage.check_s3(_s3(moto))
    listed = moto.client().list_objects_v2(Bucket="pf-core-storage").get("Contents", [])
    assert not [o for o in listed if o["Key"].startswith("pb_settings_test_")]
    with pytest.raises(file_storage.S3CheckError, match=r"^S3 storage filesystem is not enabled$"):
        file_storage.check_s3(_s3(moto, enabled=False))
    with pytest.raises(file_storage.S3CheckError, match=r"^failed to upload a test file: "):
        file_storage.check_s3({**_s3(moto), "bucket": "pf-no-such-bucket"})
