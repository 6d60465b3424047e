"""`core.backups` and `core.backup_archive` on a real `App` (no HTTP): PocketBase's names, the
archive's members and its consistency while the app keeps writing, the busy flag, a restore in
place (the data, settings, log and cron of the backup; `backups/` kept), bad archives refused
before anything is swapped (the data untouched, PocketBase's log entry), a restored folder that
does not open reverted, and the automatic backups (names, `cronMaxKeep`, the alert mail)."""

from __future__ import annotations

import asyncio
import copy
import os
import sqlite3
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from instance_runtime.core import backups as service
from instance_runtime.core import crons, file_storage
from instance_runtime.core.app import App
from instance_runtime.core.auth import upsert_superuser
from instance_runtime.core.settings_validation import validate
from instance_runtime.tools.filesystem.local import LocalStorage
from tests.support.ports import free_port
from tests.support.smtp import SmtpServer


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    runtime = App(tmp_path / "pb_data", readers=1)
    file_storage.bind(runtime)
    crons.bind(runtime)
    try:
        yield runtime
    finally:
        runtime.cron.stop()
        runtime.close()


@pytest.fixture
def backups(app: App) -> service.Backups:
    return service.bind(app)


def _make_table(app: App) -> None:
    app.write_sync(lambda conn, schema: conn.execute("CREATE TABLE notes (n INTEGER, txt TEXT)"))


def _add(app: App, *values: int) -> None:
    def run(conn: sqlite3.Connection, schema: Any) -> None:
        conn.executemany("INSERT INTO notes VALUES (?, 'x')", [(v,) for v in values])

    app.write_sync(run)


def _numbers(app: App) -> list[int]:
    rows = app.db.read_sync(lambda conn: conn.execute("SELECT n FROM notes ORDER BY n").fetchall())
    return [int(r[0]) for r in rows]


def _save(app: App, **members: Any) -> None:
    values = copy.deepcopy(app.settings.current)
    for key, value in members.items():
        values[key] = {**values[key], **value}
    asyncio.run(app.save_settings(values))


def _put_zip(backups: service.Backups, name: str, members: dict[str, bytes]) -> None:
    path = backups.temp_dir() / f"made-{name}"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    backups.store(path, name)


def test_names_are_pocketbase_s() -> None:
    moment = datetime(2026, 12, 3, 9, 46, 26, tzinfo=UTC)
    # what PocketBase 0.40.6 named its auto backup of an app called "My Cool-App ÄX"
    assert (
        service.generate_name("My Cool-App ÄX", service.AUTO_PREFIX, moment)
        == "@auto_pb_backup_my_cool_app_x_20261203094626.zip"
    )
    assert service.generate_name("Acme", "pb_backup_", moment) == (
        "pb_backup_acme_20261203094626.zip"
    )
    long = service.generate_name("A" + "b" * 80, "pb_backup_", moment)
    assert long == "pb_backup_" + "a" + "b" * 49 + "_20261203094626.zip"
    assert service.NAME_PATTERN.match("ok_1-2.zip")
    assert not service.NAME_PATTERN.match("Bad.zip") and not service.NAME_PATTERN.match("x")


def test_the_archive_holds_pocketbase_s_members(app: App, backups: service.Backups) -> None:
    _make_table(app)
    _add(app, 1, 2, 3)
    data = app.data_dir
    (data / "storage" / "coll" / "rec").mkdir(parents=True)
    (data / "storage" / "coll" / "rec" / "a.txt").write_bytes(b"file a " * 1000)
    photo = os.urandom(100_000)  # as incompressible as a jpeg
    (data / "storage" / "coll" / "rec" / "photo.jpg").write_bytes(photo)
    (data / "backups").mkdir(exist_ok=True)
    (data / "backups" / "older.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (data / ".pf_uploads").mkdir(exist_ok=True)
    (data / ".pf_uploads" / "staged").write_bytes(b"in flight")
    (data / ".pb_temp_to_delete").mkdir(exist_ok=True)
    (data / "hooks_state.json").write_text("{}")
    os.symlink("/etc/hostname", data / "storage" / "link")
    os.mkfifo(data / "storage" / "fifo")
    app.request_log.add(0, "GET /x", {"status": 200})

    name = backups.create()
    assert service.NAME_PATTERN.match(name) and name.startswith("pb_backup_acme_")
    archive = data / "backups" / name
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert names[:2] == ["data.db", "auxiliary.db"]
        assert sorted(names[2:]) == [
            "hooks_state.json",
            "storage/coll/rec/a.txt",
            "storage/coll/rec/photo.jpg",
        ]
        assert zipped.read("storage/coll/rec/a.txt") == b"file a " * 1000
        assert zipped.read("storage/coll/rec/photo.jpg") == photo
        methods = {i.filename: i.compress_type for i in zipped.infolist()}
        assert methods["data.db"] == methods["storage/coll/rec/a.txt"] == zipfile.ZIP_DEFLATED
        assert methods["storage/coll/rec/photo.jpg"] == zipfile.ZIP_STORED  # no CPU spent
        (data / "check").mkdir()
        zipped.extract("data.db", data / "check")
        zipped.extract("auxiliary.db", data / "check")
    with sqlite3.connect(data / "check" / "data.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (3,)
    with sqlite3.connect(data / "check" / "auxiliary.db") as conn:
        assert conn.execute("SELECT message FROM _logs").fetchall() == [("GET /x",)]
    assert [b.key for b in backups.list()] == sorted([name, "older.zip"])
    assert not list((data / ".pb_temp_to_delete").iterdir())  # the staged zip went away


def test_a_backup_is_a_consistent_snapshot_while_writes_go_on(
    app: App, backups: service.Backups
) -> None:
    _make_table(app)
    filler = os.urandom(1 << 16).hex()
    app.write_sync(
        lambda conn, schema: conn.executemany(
            "INSERT INTO notes VALUES (?, ?)", [(-i, filler) for i in range(1, 400)]
        )
    )  # ~50 MB: the snapshot takes long enough for the writes below to overlap it
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            _add(app, n)  # one transaction per number, in order
            written.append(n)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(written) < 5:
            threading.Event().wait(0.01)
        started = len(written)
        name = backups.create("during_writes.zip")
        during = len(written)
    finally:
        stop.set()
        writer.join()
    assert during > started, "the writes went on while the backup was made"
    with zipfile.ZipFile(app.data_dir / "backups" / name) as zipped:
        zipped.extract("data.db", app.data_dir / "check")
    with sqlite3.connect(app.data_dir / "check" / "data.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        found = [r[0] for r in conn.execute("SELECT n FROM notes WHERE n > 0 ORDER BY n")]
    assert found == list(range(1, len(found) + 1)), "a prefix of the committed writes"
    assert len(found) >= started, "with every write committed before the backup began"


def test_file_removals_wait_while_held(app: App) -> None:
    holder = file_storage.storage_of(app)
    storage = holder.get()
    assert isinstance(storage, LocalStorage)
    storage.put_bytes("c/r/a.txt", b"a")
    with holder.removals_held():
        holder.after_commit(storage, lambda s: s.delete("c/r/a.txt"))
        assert storage.exists("c/r/a.txt"), "a backup copying storage/ still finds it"
    assert not storage.exists("c/r/a.txt")


def test_one_operation_at_a_time(backups: service.Backups) -> None:
    with backups.running("running.zip"):
        assert backups.busy and backups.active == "running.zip"
        with pytest.raises(service.BusyError, match="another backup/restore operation"):
            backups.create("other.zip")
        with pytest.raises(service.BusyError):
            asyncio.run(backups.restore("running.zip"))
    assert not backups.busy and backups.active == ""


def test_a_restore_swaps_the_data_in_place(app: App, backups: service.Backups) -> None:
    _make_table(app)
    _add(app, 1)
    (app.data_dir / "storage" / "c").mkdir(parents=True)
    (app.data_dir / "storage" / "c" / "kept.txt").write_text("from the backup")
    _save(app, meta={"appName": "Before"})
    name = backups.create("snap.zip")
    _add(app, 2)
    (app.data_dir / "storage" / "c" / "later.txt").write_text("after the backup")
    _save(app, meta={"appName": "After"})
    app.cron.start()
    generation = app.auth_generation
    old_db = app.db

    assert asyncio.run(backups.restore(name)) is True

    assert _numbers(app) == [1]
    assert app.db is not old_db
    assert app.settings.current["meta"]["appName"] == "Before"
    assert app.auth_generation > generation
    assert app.cron.has_started
    assert (app.data_dir / "storage" / "c" / "kept.txt").read_text() == "from the backup"
    assert not (app.data_dir / "storage" / "c" / "later.txt").exists()
    assert [b.key for b in backups.list()] == ["snap.zip"]  # backups/ stayed
    assert not list((app.data_dir / ".pb_temp_to_delete").iterdir())
    _add(app, 3)  # the reopened app writes
    assert _numbers(app) == [1, 3]
    app.request_log.add(0, "after restore", {})
    assert app.request_log.recent(1)[0]["message"] == "after restore"
    assert not backups.busy


def _corrupt_db(tmp: Path) -> bytes:
    path = tmp / "corrupt.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("y" * 500,) for _ in range(200)])
        conn.execute("CREATE INDEX t_x ON t (x)")
    raw = bytearray(path.read_bytes())
    raw[4096 * 3 : 4096 * 3 + 64] = b"\xff" * 64  # a damaged b-tree page
    return bytes(raw)


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        (None, "zip: not a valid zip file"),
        ({"hello.txt": b"x"}, "data.db file is missing or invalid: stat "),
        ({"data.db": b"not a database" * 100}, "data.db file is missing or invalid: file is not"),
        ({"data.db": "CORRUPT", "x": b""}, "data.db file is missing or invalid"),
        ({"data.db": "VALID", "../../slipped.txt": b"x"}, "invalid file path: "),
        ({"data.db": "VALID", "/tmp/pf-absolute-slip.txt": b"x"}, "invalid file path: "),
    ],
    ids=["not-a-zip", "no-data-db", "junk-data-db", "corrupt-data-db", "zip-slip", "absolute"],
)
def test_a_bad_archive_is_refused_before_anything_is_swapped(
    app: App, backups: service.Backups, tmp_path: Path, members: Any, reason: str
) -> None:
    _make_table(app)
    _add(app, 7)
    valid = backups.temp_dir() / "valid.db"
    with sqlite3.connect(valid) as conn:
        conn.execute("CREATE TABLE notes (n INTEGER, txt TEXT)")
    if members is None:
        (app.data_dir / "backups").mkdir(exist_ok=True)
        (app.data_dir / "backups" / "bad.zip").write_bytes(b"PK\x03\x04 but no archive")
    else:
        content = {
            k: _corrupt_db(tmp_path)
            if v == "CORRUPT"
            else valid.read_bytes()
            if v == "VALID"
            else v
            for k, v in members.items()
        }
        _put_zip(backups, "bad.zip", content)
    before = sorted(p.name for p in app.data_dir.iterdir())
    db = app.db

    assert asyncio.run(backups.restore("bad.zip")) is False

    assert app.db is db, "the app was not even closed"
    assert _numbers(app) == [7]
    assert sorted(p.name for p in app.data_dir.iterdir()) == before
    assert not (app.data_dir / "slipped.txt").exists()
    assert not Path("/tmp/pf-absolute-slip.txt").exists()
    entry = app.request_log.recent(1)[0]
    assert entry["message"] == "Failed to restore backup" and entry["level"] == 8
    assert entry["data"]["key"] == "bad.zip"
    assert entry["data"]["error"].startswith(reason), entry["data"]["error"]
    assert not backups.busy
    assert not [p for p in (app.data_dir / ".pb_temp_to_delete").iterdir() if p.is_dir()]


def test_a_restored_folder_that_does_not_open_is_reverted(
    app: App, backups: service.Backups
) -> None:
    _make_table(app)
    _add(app, 5)
    broken = backups.temp_dir() / "broken.db"
    with sqlite3.connect(broken) as conn:  # sound for SQLite, not a PocketBase database
        conn.execute("CREATE TABLE _collections (nothing_expected TEXT)")
        conn.execute("INSERT INTO _collections VALUES ('x')")
    _put_zip(backups, "broken.zip", {"data.db": broken.read_bytes()})

    assert asyncio.run(backups.restore("broken.zip")) is False

    assert _numbers(app) == [5]
    _add(app, 6)
    assert _numbers(app) == [5, 6]
    error = app.request_log.recent(1)[0]["data"]["error"]
    assert error.startswith("failed to restart the app: "), error


def test_auto_backups_keep_the_newest_cron_max_keep(app: App, backups: service.Backups) -> None:
    _save(app, backups={"cron": "0 0 * * *", "cronMaxKeep": 2})
    assert dict((j.id, j.expression) for j in app.cron.jobs())["__pbAutoBackup__"] == "0 0 * * *"
    folder = app.data_dir / "backups"
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(["@auto_pb_backup_acme_20200101000000.zip",
                              "@auto_pb_backup_acme_20200102000000.zip",
                              "manual.zip"]):  # fmt: skip
        (folder / name).write_bytes(b"PK\x05\x06" + b"\0" * 18)
        os.utime(folder / name, (1_600_000_000 + i * 100, 1_600_000_000 + i * 100))
    (folder / "@auto_pb_backup_acme_20200101000000.zip.attrs").write_text("{}")  # PocketBase's

    backups.auto_backup()

    keys = [b.key for b in backups.list()]
    made = [k for k in keys if k.startswith("@auto_pb_backup_acme_2") and "2020" not in k]
    assert len(made) == 1 and made[0].endswith(".zip")
    assert keys == sorted([made[0], "@auto_pb_backup_acme_20200102000000.zip", "manual.zip"])
    assert not (folder / "@auto_pb_backup_acme_20200101000000.zip.attrs").exists()


def test_a_failed_auto_backup_is_logged_and_mailed(app: App, backups: service.Backups) -> None:
    app.write_sync(
        lambda conn, schema: upsert_superuser(conn, schema, "su@example.com", "pw-12345678")
    )
    dead = {
        "enabled": True,
        "bucket": "b",
        "region": "us-east-1",
        "endpoint": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "accessKey": "k",
        "secret": "s",
        "forcePathStyle": True,
    }
    with SmtpServer() as smtp:
        _save(
            app,
            smtp={"enabled": True, "host": smtp.host, "port": smtp.port, "tls": False},
            backups={"cron": "0 0 * * *", "cronMaxKeep": 1, "s3": dead},
        )
        backups.auto_backup()
        mail = smtp.wait_for(to="su@example.com", subject_contains="system alert", timeout=20)
    assert mail.subject == "[Acme system alert] Autobackup failure"
    assert "Failed to create/upload automated backup. Raw error:" in mail.html
    entry = app.request_log.recent(1)[0]
    assert entry["message"] == "[Backup cron] Failed to create backup"
    assert entry["data"]["name"].startswith("@auto_pb_backup_acme_")
    assert not backups.busy


@pytest.mark.parametrize(
    ("cron", "message"),
    [  # PocketBase 0.40.6's answers, captured
        ("60 * * * *", "Invalid segment value - must be between the min and max of the segment."),
        ("a b c d e", 'Strconv.Atoi: parsing "a": invalid syntax.'),
        ("*/0 * * * *", "Invalid segment step boundary - the step must be between 1 and the 59."),
        ("1-70 * * * *", "Invalid segment range maximum - must be between 1 and 59."),
        ("@every 1m", "Invalid cron expression - must be a valid macro or to have exactly 5 "
                      "space separated segments."),
    ],
)  # fmt: skip
def test_the_backups_settings_validate_as_pocketbase(app: App, cron: str, message: str) -> None:
    values = copy.deepcopy(app.settings.current)
    values["backups"].update(cron=cron, cronMaxKeep=0)
    errors = validate(values)["backups"]
    assert errors["cron"].code == "validation_invalid_cron"
    assert errors["cron"].message == message
    assert errors["cronMaxKeep"].code == "validation_required"
    values["backups"].update(cron="@hourly", cronMaxKeep=3)
    assert "backups" not in validate(values)
    values["backups"].update(cron="", cronMaxKeep=-1)
    assert validate(values)["backups"]["cronMaxKeep"].message == "Must be no less than 1."


def test_on_restored_runs_on_the_restored_data_and_a_failure_reverts(
    app: App, backups: service.Backups
) -> None:
    _make_table(app)
    _add(app, 1)
    backups.create("one.zip")
    _add(app, 2)
    seen: list[list[int]] = []
    backups.on_restored(lambda: seen.append(_numbers(app)))
    assert asyncio.run(backups.restore("one.zip")) is True
    assert seen == [[1]], "ran once the restored folder was open"

    _add(app, 3)

    def refuse() -> None:
        raise RuntimeError("a migration failed")

    backups.on_restored(refuse)
    assert asyncio.run(backups.restore("one.zip")) is False
    assert _numbers(app) == [1, 3]
    error = app.request_log.recent(1)[0]["data"]["error"]
    assert error == "failed to restart the app: a migration failed"
