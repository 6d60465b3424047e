"""A supervised Caddy child process (`pocketfleet serve --proxy caddy --start-caddy`).

Contract:
- `start()` runs `caddy run --config BOOTSTRAP` (admin endpoint on the unix socket at the
  absolute path `admin`, certificate storage under `state_dir`) and returns once the admin endpoint
  answers. The admin API has no authentication: the socket's folder must be ours and closed
  to everyone else (`0700`; created so if missing, else `CaddyStartError`), and `state_dir` is
  made `0700`. Caddy runs with umask 077 and never listens for its admin API on TCP (every
  config it gets from pocketfleet pins the admin endpoint to the socket, see
  `proxy.caddy.config.apply`). A Caddy left running by an earlier `serve` that died (its pid in
  `state_dir/caddy.pid`) is stopped first. The child gets SIGTERM if this process dies.
- Every start writes `state_dir/bootstrap.json`: the admin endpoint, storage and log, passed
  through `startup_config` if given (the route sink adds every route there, so that a
  restarted Caddy serves them from its first request).
- While running, a child that exits is started again (at once, then after 0.1 s, doubling
  up to 5 s while it keeps dying within 30 s of its start), and `on_restart()` is awaited
  once its admin endpoint answers (the route sink pushes again if anything is missing).
- `stop()` stops supervising and terminates the child (SIGTERM, then SIGKILL after 5 s).

Caddy logs to `state_dir/caddy.log` (rolled by Caddy itself); what it prints before its
config is loaded goes to `state_dir/caddy.out` (the previous one kept as `caddy.out.1`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from proxy.caddy.admin import (
    AdminAddressError,
    CaddyAdmin,
    CaddyError,
    admin_listen,
    admin_socket,
    open_to_others,
)
from proxy.caddy.config import Json, bootstrap

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_STABLE_S = 30.0


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.umask(0o077)  # the admin socket, certificates and keys: ours only
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class CaddyStartError(Exception):
    """Caddy could not be started (missing binary, port in use, bad config)."""


class CaddyProcess:
    def __init__(
        self,
        binary: str,
        admin: Path,
        state_dir: Path,
        *,
        on_restart: Callable[[], Awaitable[None]] | None = None,
        startup_config: Callable[[Json], Json] | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        try:
            self.admin = admin_socket(str(admin))
        except AdminAddressError as exc:
            raise CaddyStartError(str(exc)) from exc
        self.binary = binary
        self.state_dir = state_dir
        self.on_restart = on_restart
        self.startup_config = startup_config
        self.start_timeout_s = start_timeout_s
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "caddy.pid"

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_dir.chmod(0o700)
        self.admin.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        reason = open_to_others(self.admin)
        if reason is not None:
            raise CaddyStartError(
                f"Caddy's admin socket {self.admin} would not be ours alone: {reason}; "
                "its folder must belong to us with mode 0700"
            )
        await asyncio.to_thread(self._stop_leftover)
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="caddy-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.pid_file.unlink(missing_ok=True)

    def _stop_leftover(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        if not cmdline or Path(cmdline[0].decode(errors="replace")).name != "caddy":
            return  # the pid belongs to something else now
        log.warning("stopping a Caddy left running by an earlier serve (pid %d)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def _spawn(self) -> None:
        config = bootstrap(
            self.admin, str(self.state_dir / "data"), str(self.state_dir / "caddy.log")
        )
        if self.startup_config is not None:
            config = self.startup_config(config)
        (self.state_dir / "bootstrap.json").write_bytes(orjson.dumps(config))
        logfile = self.state_dir / "caddy.out"
        with contextlib.suppress(OSError):
            if logfile.stat().st_size > 0:
                logfile.replace(self.state_dir / "caddy.out.1")
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.state_dir),
            "XDG_DATA_HOME": str(self.state_dir / "data"),
            "XDG_CONFIG_HOME": str(self.state_dir / "config"),
        }
        with logfile.open("ab") as out:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    self.binary,
                    "run",
                    "--config",
                    str(self.state_dir / "bootstrap.json"),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env=env,
                    preexec_fn=_child_setup,
                )
            except OSError as exc:
                raise CaddyStartError(f"cannot run {self.binary}: {exc}") from exc
        self._started_at = time.monotonic()
        self.pid_file.write_text(str(self._process.pid))
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        admin = CaddyAdmin(self.admin, timeout_s=1.0)
        try:
            deadline = time.monotonic() + self.start_timeout_s
            delay = 0.005
            while True:
                process = self._process
                if process is None or process.returncode is not None:
                    tail = _tail(self.state_dir / "caddy.out")
                    raise CaddyStartError(f"caddy exited at start: {tail}")
                with contextlib.suppress(CaddyError):
                    await admin.get("/config/")
                    return
                if time.monotonic() > deadline:
                    raise CaddyStartError(
                        f"caddy's admin endpoint {admin_listen(self.admin)} did not answer"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
        finally:
            await admin.aclose()

    async def _supervise(self) -> None:
        delay = 0.0
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            log.warning("caddy exited (%s); starting it again", code)
            if time.monotonic() - self._started_at > _STABLE_S:
                delay = 0.0
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.1), 5.0)
            try:
                await self._spawn()
            except CaddyStartError as exc:
                log.error("restarting caddy failed: %s", exc)
                continue
            self.restarts += 1
            if self.on_restart is not None:
                try:
                    await self.on_restart()
                except Exception:
                    log.exception("restoring routes after a caddy restart failed")


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _tail(path: Path, size: int = 800) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return "(no log)"
