"""A tenant who rearranges its own instance folder to make the control plane (root) read or
write another tenant's files through snapshots, restores and replication — through the real
API: `pocketfleet serve` as root with instances as their own uids, real PocketBase, Litestream
and moto's S3 server on loopback.

The tenant's moves are made here by the test (as root, standing in for a hook in the
instance): symbolic links (to another tenant's database, its folder, `/etc/shadow`), a hard
link to another tenant's database (which `fs.protected_hardlinks` and the folders' modes deny a
real tenant; the control plane must not rely on that), a FIFO, a file of another uid."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.backups.litestream import litestream_binary
from control_plane.backups.replication_checks import held_files, held_refusal
from tests.control_plane.backups.conftest import Notes, Tenant, now, plant, unique
from tests.support.s3 import FaultyLine, MotoServer, s3_env
from tests.support.server import ServeProcess, running_server

BUCKET = "pf-backups-hostile"


@pytest.fixture(scope="module")
def serve(moto: MotoServer, line: FaultyLine) -> Iterator[ServeProcess]:
    moto.create_bucket(BUCKET)
    env = s3_env(moto.port, BUCKET)
    env.update(PF_FIRST_ACCOUNT_IS_OPERATOR="true")
    with running_server(env=env) as server:
        yield server


class Victim:
    """Another tenant's instance whose main database file holds `secret` (written, then
    checkpointed into `pb_data/data.db` by hibernating it)."""

    def __init__(self, serve: ServeProcess) -> None:
        self.owner = Tenant(serve)
        self.notes = self.owner.create(unique("victim")).setup()
        self.secret = f"other-tenant-secret-{unique('s')}-{os.urandom(6).hex()}"
        self.notes.add(self.secret, self.secret)
        asleep = self.owner.api.post(f"/api/instances/{self.notes.name}/hibernate")
        assert asleep.status_code == 200, asleep.text
        self.owner.wait_status(self.notes.name, "hibernated")
        self.root = folder(serve, self.owner, self.notes.name)
        self.db = self.root / "pb_data" / "data.db"
        assert self.secret.encode() in self.db.read_bytes()  # the bait is where it matters
        self.uid = self.root.stat().st_uid


@pytest.fixture(scope="module")
def victim(serve: ServeProcess, operator: Tenant) -> Victim:
    return Victim(serve)


def folder(serve: ServeProcess, tenant: Tenant, name: str) -> Path:
    return serve.data_dir / "instances" / tenant.instance(name)["id"]


def download(tenant: Tenant, name: str, snap_id: str) -> tuple[bytes, dict[str, bytes]]:
    """The snapshot's raw (gunzipped) tar stream and its members' contents."""
    answer = tenant.api.get(f"/api/instances/{name}/backups/{snap_id}/download")
    assert answer.status_code == 200, answer.text
    raw = gzip.decompress(answer.content)
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for member in tar:
            assert member.isreg(), member.name
            extracted = tar.extractfile(member)
            assert extracted is not None
            members[member.name] = extracted.read()
    return raw, members


def owners(root: Path) -> dict[str, int]:
    """rel -> uid of every entry of the folder (links not followed)."""
    found = {".": root.lstat().st_uid}
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(parent) / name
            found[path.relative_to(root).as_posix()] = path.lstat().st_uid
    return found


def assert_untouched(victim: Victim) -> None:
    """The other tenant's database is still its own, with its data (its bytes may move: its
    own replication checkpoints it)."""
    assert victim.db.lstat().st_uid == victim.uid
    assert victim.notes.all() == {victim.secret: victim.secret}


def test_a_database_that_is_not_the_instances_own_file_fails_the_snapshot(
    tenant: Tenant, serve: ServeProcess, victim: Victim
) -> None:
    notes = tenant.create(unique("thief")).setup()
    notes.add("mine")
    root = folder(serve, tenant, notes.name)
    data = root / "pb_data"
    uid = root.stat().st_uid

    def link_database() -> None:
        os.rename(data / "data.db", data / "data.db.mine")
        os.symlink(victim.db, data / "data.db")

    def unlink_database() -> None:
        os.unlink(data / "data.db")
        os.rename(data / "data.db.mine", data / "data.db")

    def link_folder() -> None:
        os.rename(data, root / "pb_data.mine")
        os.symlink(victim.root / "pb_data", data)

    def unlink_folder() -> None:
        os.unlink(data)
        os.rename(root / "pb_data.mine", data)

    def link_wal() -> None:
        os.rename(data / "data.db-wal", data / "data.db-wal.mine")
        os.symlink(victim.root / "pb_data" / "data.db-wal", data / "data.db-wal")

    def unlink_wal() -> None:
        os.unlink(data / "data.db-wal")
        os.rename(data / "data.db-wal.mine", data / "data.db-wal")

    def hard_link_database() -> None:
        os.rename(data / "data.db", data / "data.db.mine")
        os.link(victim.db, data / "data.db")

    cases = [
        (link_database, unlink_database, "pb_data/data.db is a symbolic link"),
        (link_folder, unlink_folder, "pb_data: a symbolic link, not a directory"),
        (link_wal, unlink_wal, "pb_data/data.db-wal is a symbolic link"),
        (hard_link_database, unlink_database, f"owned by uid {victim.uid}, not {uid}"),
    ]
    for trap, untrap, why in cases:
        # Litestream runs with the instance's databases open (a pass may have left them out
        # while a trap was in place): no (re)start opens them during a trap, which would have
        # root's SQLite give the WAL away (see `held_refusal`), failing the snapshot at the end
        tenant.wait_replicated(notes.name, now())
        trap()
        try:
            answer = tenant.api.post(f"/api/instances/{notes.name}/backups")
        finally:
            untrap()
        assert answer.status_code == 422, answer.text
        assert why in answer.json()["detail"], answer.text
    listed = tenant.backups(notes.name)["snapshots"]
    assert [s["status"] for s in listed] == ["failed"] * len(cases)
    assert_untouched(victim)
    assert notes.titles() == {"mine"}  # the thief's own instance still works
    assert tenant.snapshot(notes.name)["status"] == "good"  # and is snapshotted once tidy


def test_what_litestream_opened_through_a_hard_link_is_told_and_the_wal_given_back(
    tmp_path: Path,
) -> None:
    """The window the checks above leave: Litestream (root) opening an instance's database
    while its name is a hard link to another tenant's. Its SQLite gives the instance's WAL and
    `-shm` to that tenant's uid; `held_refusal`, from what the process holds open, gives them
    back and refuses the instance until Litestream no longer holds the other's database."""
    if os.geteuid() != 0:
        pytest.skip("Litestream runs as root only when the control plane does")
    theirs, mine = 240_901, 240_902  # two instance-like uids
    victim_db = sqlite_folder(tmp_path / "victim", theirs, [("secret", "other-tenant-secret")])
    root = tmp_path / "thief"
    thief_db = sqlite_folder(root, mine, [("mine", "mine")])
    data = thief_db.parent
    writer = sqlite3.connect(thief_db, isolation_level=None)  # the instance's own PocketBase
    writer.execute("PRAGMA journal_mode=wal")
    writer.execute("INSERT INTO notes VALUES ('later', 'in the WAL')")
    for name in ("data.db-wal", "data.db-shm"):
        os.chown(data / name, mine, mine)
    os.rename(thief_db, data / "data.db.mine")
    os.link(victim_db, thief_db)  # set between two checks
    config = tmp_path / "litestream.json"
    replica = {"type": "file", "path": str(tmp_path / "replica")}
    entry = {"path": str(thief_db), "meta-path": str(tmp_path / "meta"), "replica": replica}
    config.write_text(json.dumps({"dbs": [entry]}))
    litestream = replicate(config)
    try:
        eventually(lambda: (data / "data.db-wal").stat().st_uid == theirs, timeout=30)
        os.unlink(thief_db)
        os.rename(data / "data.db.mine", thief_db)
        assert (data / "data.db-wal").stat().st_uid == theirs  # given away, and stays so

        held = held_files(litestream.pid)
        reason = held_refusal(held, root.resolve(), ["pb_data/data.db"], mine)
        assert reason is not None
        assert f"litestream opened pb_data/data.db while it was a file of uid {theirs}" in reason
        assert {p.name: p.stat().st_uid for p in data.iterdir()} == dict.fromkeys(
            ("data.db", "data.db-wal", "data.db-shm"), mine
        )  # the instance's own WAL and -shm are its own again
        assert held_refusal(held, root.resolve(), ["pb_data/data.db"], mine) == reason
        victim = victim_db.parent.parent
        assert held_refusal(held, victim.resolve(), ["pb_data/data.db"], theirs) is None
    finally:
        litestream.kill()  # no close: its connection to the other database checkpoints nothing
        litestream.wait()
        writer.close()
    calm = replicate(config)
    try:  # the instance's own files only, once no link is in place: nothing refused
        own = (thief_db.stat().st_dev, thief_db.stat().st_ino)
        eventually(lambda: own in {(h.info.st_dev, h.info.st_ino) for h in held_files(calm.pid)})
        assert held_refusal(held_files(calm.pid), root.resolve(), ["pb_data/data.db"], mine) is None
    finally:
        calm.kill()
        calm.wait()
    check = sqlite3.connect(f"file:{victim_db}?mode=ro", uri=True)
    assert check.execute("SELECT title FROM notes").fetchall() == [("secret",)]
    check.close()


def replicate(config: Path) -> subprocess.Popen[bytes]:
    """`litestream replicate` with the configuration `config`, as the control plane runs it
    (root), outside its jail (which does nothing to hard links)."""
    binary = litestream_binary()
    assert binary is not None
    return subprocess.Popen(
        [str(binary), "replicate", "-no-expand-env", "-config", str(config)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(config.parent)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def sqlite_folder(root: Path, uid: int, rows: list[tuple[str, str]]) -> Path:
    """An instance folder of `uid` (0700) whose `pb_data/data.db` (WAL mode) holds `rows`."""
    db = root / "pb_data" / "data.db"
    db.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("CREATE TABLE notes (title TEXT, body TEXT)")
        conn.executemany("INSERT INTO notes VALUES (?, ?)", rows)
        conn.commit()
    for path in (root, *root.rglob("*")):
        os.chown(path, uid, uid)
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    return db


def test_a_fifo_in_place_of_a_wal_fails_the_snapshot_instead_of_hanging_it(
    tenant: Tenant, serve: ServeProcess
) -> None:
    notes = tenant.create(unique("fifo")).setup()
    asleep = tenant.api.post(f"/api/instances/{notes.name}/hibernate")
    assert asleep.status_code == 200, asleep.text
    tenant.wait_status(notes.name, "hibernated")
    root = folder(serve, tenant, notes.name)
    wal = root / "pb_data" / "data.db-wal"
    wal.unlink(missing_ok=True)
    os.mkfifo(wal)
    os.chown(wal, root.stat().st_uid, root.stat().st_uid)
    try:
        answer = tenant.api.post(f"/api/instances/{notes.name}/backups")
        assert answer.status_code == 422, answer.text
        assert "pb_data/data.db-wal is a FIFO" in answer.json()["detail"]
    finally:
        wal.unlink()
    assert tenant.instance(notes.name)["status"] == "hibernated"


def test_links_hard_links_fifos_and_foreign_files_stay_out_of_the_archive(
    tenant: Tenant, serve: ServeProcess, victim: Victim
) -> None:
    notes = tenant.create(unique("traps")).setup()
    notes.add("mine")
    root = folder(serve, tenant, notes.name)
    plant(root, "pb_public/index.html", b"<h1>mine</h1>")
    public = root / "pb_public"
    os.symlink("/etc/shadow", public / "shadow")
    os.symlink(victim.db, public / "other.db")
    os.symlink(victim.root / "pb_data", public / "other-data")
    os.link(victim.db, public / "hard.db")
    os.mkfifo(public / "fifo")
    (root / "pb_hooks" / "theirs.js").write_text(victim.secret)
    os.chown(root / "pb_hooks" / "theirs.js", victim.uid, victim.uid)
    traps = {
        "pb_public/shadow",
        "pb_public/other.db",
        "pb_public/other-data",
        "pb_public/hard.db",
        "pb_public/fifo",
        "pb_hooks/theirs.js",
    }

    snap = tenant.snapshot(notes.name)
    assert "left out" in snap["reason"] and "pb_public/hard.db" in snap["reason"], snap
    raw, members = download(tenant, notes.name, snap["id"])
    assert victim.secret.encode() not in raw  # nothing of the other tenant, anywhere
    assert members["pb_public/index.html"] == b"<h1>mine</h1>"
    assert not traps & set(members)
    assert not any(name.startswith("pb_public/other-data/") for name in members)
    manifest = json.loads(members["MANIFEST.json"])
    assert {item["path"] for item in manifest["skipped"]} == traps
    assert_untouched(victim)

    done = tenant.restore(notes.name, snap["id"])
    assert done["status"] == "done"
    assert notes.titles() == {"mine"}
    restored = owners(root)
    assert not traps & set(restored)
    assert set(restored.values()) == {root.stat().st_uid}, restored


def test_restores_carry_over_nothing_of_another_tenant_and_give_files_to_the_instance(
    tenant: Tenant, serve: ServeProcess, victim: Victim
) -> None:
    notes = tenant.create(unique("carry")).setup()
    notes.add("kept")
    root = folder(serve, tenant, notes.name)
    uid = root.stat().st_uid
    plant(root, "pb_public/app.js", b"console.log('mine')")
    snap = tenant.snapshot(notes.name)

    # from a snapshot: the live output log (carried over) is a link to the other database
    log = root / "output.log"
    log.unlink()
    os.symlink(victim.db, log)
    tenant.restore(notes.name, snap["id"])
    assert not log.is_symlink() and victim.secret.encode() not in log.read_bytes()
    assert set(owners(root).values()) == {uid}

    # to a point in time: every other live file is carried over, links and foreign ones not
    public = root / "pb_public"
    os.link(victim.db, public / "hard.db")
    os.symlink(victim.root / "pb_data", public / "other-data")
    os.symlink(victim.db, public / "other.db")
    notes.add("later")
    # the advertised end: a later moment may hold writes not shipped yet (the request log's)
    done = tenant.restore_to(notes.name, tenant.wait_replicated(notes.name, now()))
    assert done["status"] == "done", done
    assert notes.titles() == {"kept", "later"}
    assert (public / "app.js").read_bytes() == b"console.log('mine')"
    found = owners(root)
    assert not {"pb_public/hard.db", "pb_public/other-data", "pb_public/other.db"} & set(found)
    assert set(found.values()) == {uid}, found
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert victim.secret.encode() not in path.read_bytes(), path
    modes = {(root / rel).lstat().st_mode & 0o777 for rel in ("pb_public", "pb_public/app.js")}
    assert modes == {0o700, 0o600}
    assert_untouched(victim)


def litestream_pid(serve: ServeProcess, path: str) -> int:
    """The pid of the Litestream that replicates the database `path` (its shard's), once it
    runs (its jail is set up before it is exec'd)."""
    configs = (serve.data_dir / "litestream").glob("shard-*/litestream.json")
    shard = next(c.parent for c in configs if path in listed_paths(c))
    pid_file = shard / "litestream.pid"

    def running() -> bool:
        try:
            pid = int(json.loads(pid_file.read_text())["pid"])
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            return program.endswith(b"/litestream")  # not yet `unshare` or `sh`
        except (OSError, ValueError, KeyError):
            return False

    eventually(running)
    data: dict[str, Any] = json.loads(pid_file.read_text())
    return int(data["pid"])


def listed_paths(config: Path) -> set[str]:
    try:
        return {db["path"] for db in json.loads(config.read_text())["dbs"]}
    except (OSError, ValueError, KeyError):
        return set()


def replicated_paths(serve: ServeProcess) -> set[str]:
    """The databases every Litestream shard's configuration lists."""
    configs = (serve.data_dir / "litestream").glob("shard-*/litestream.json")
    return {path for config in configs for path in listed_paths(config)}


def eventually(check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_litestream_follows_no_link_and_a_linked_database_is_not_replicated(
    tenant: Tenant, serve: ServeProcess, victim: Victim
) -> None:
    notes: Notes = tenant.create(unique("repl")).setup()
    root = folder(serve, tenant, notes.name).resolve()
    aux = root / "pb_data" / "auxiliary.db"
    eventually(lambda: str(aux) in replicated_paths(serve))

    # Litestream's own view of the instances: mounted again with nosymfollow
    pid = litestream_pid(serve, str(aux))
    instances = str((serve.data_dir / "instances").resolve())
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    mine = [line for line in mounts if instances in line]
    assert any(line.split()[4] == instances and "nosymfollow" in line for line in mine), mine
    os.symlink(victim.db, root / "pb_public" / "peek")
    if shutil.which("nsenter"):
        seen = subprocess.run(
            ["nsenter", "-t", str(pid), "-m", "cat", str(root / "pb_public" / "peek")],
            capture_output=True,
        )
        assert seen.returncode != 0 and b"symbolic links" in seen.stderr, seen
        assert victim.secret.encode() not in seen.stdout

    # a database replaced by a link: left out of replication until it is the instance's again
    os.rename(aux, aux.with_name("auxiliary.db.mine"))
    os.symlink(victim.db, aux)
    try:
        eventually(lambda: str(aux) not in replicated_paths(serve))
        assert "auxiliary.db is a symbolic link" in serve.output()
    finally:
        aux.unlink()
        os.rename(aux.with_name("auxiliary.db.mine"), aux)
    eventually(lambda: str(aux) in replicated_paths(serve))
    assert_untouched(victim)
