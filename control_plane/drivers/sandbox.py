"""The sandbox of an instance process: bubblewrap (Debian's `bubblewrap`) as root.

Every process of an instance (its server, and one-off tasks such as `superuser upsert`) runs in
namespaces of its own, built by `bwrap`:

- **mount**: a fresh root holding only `/usr` (read-only, with Debian's `/bin`, `/lib`, ...
  symlinks); as `/etc`, copies of the few host files a program needs to resolve names and
  check certificates (`sandbox_etc.py`); what the engine declares it needs
  (`Engine.runtime_paths`: its binary, or its interpreter and libraries; read-only); the
  sockets the platform offers it; a private `/proc`; a `/dev` of five device nodes with a
  private `/dev/shm`; a private size-bounded `/tmp`. The instance's folder is the only
  writable place. Nothing of `PF_DATA_DIR` besides that (no control DB, no other tenant, no
  backups) exists in it.
- **pid** (its `/proc` shows its own processes only; the server is pid 1 in it, so that every
  process it leaves behind dies with it), **ipc** and **uts** (host name `pf-ID`)
  namespaces.
- then `setpriv` switches to the instance's uid and gid with no supplementary groups, no
  capabilities (effective, permitted, inheritable, ambient and bounding sets cleared) and
  no_new_privs set, before the engine's command is executed.

Secrets stay off command lines and out of root's helpers: `bwrap`'s own arguments are read from
a memfd (`--args`), not from argv; root's helpers (`prlimit`, `bwrap`, `setpriv`) run with an
environment of `PATH` and `LANG` only; the instance's variables and the engine's argv are
written into files inside the sandbox (from memfds, `--file`) that a `/bin/sh` running as the
instance's uid reads just before it executes the engine. So the dynamic linker of a root
process never sees a tenant's variable, and no root helper's argv carries a password or a
value. (An engine given a secret as an argument, as PocketBase's `superuser upsert` must be,
still shows it in its own argv: inside a sandbox made for that one task, seen by no tenant.)

The network namespace stays the host's (instances listen on loopback ports): the process driver
proves that the listener on an instance's port is its sandbox's own process before the proxy
routes to it (`control_plane.drivers.process`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

BWRAP = shutil.which("bwrap", path="/usr/bin:/bin")
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")
SHELL = "/bin/sh"

# The device nodes of a sandbox (bound from the host: cheaper than bwrap's own --dev, which
# also makes a devpts instance no server needs), and the usual links into /proc.
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEV_LINKS = {
    "/dev/fd": "/proc/self/fd",
    "/dev/stdin": "/proc/self/fd/0",
    "/dev/stdout": "/proc/self/fd/1",
    "/dev/stderr": "/proc/self/fd/2",
}
# Debian's merged /usr: these are symlinks into it.
USR_LINKS = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}
ENV_FILE = "/run/pocketfleet/env"
ARGV_FILE = "/run/pocketfleet/argv"
# The only process of a sandbox a zygote's child joins: it says the sandbox is ready (bwrap
# reports its pid before it has built the sandbox's file system), then ends when its stdin (a
# pipe whose write end the child holds) closes.
HOLDER = ["/bin/sh", "-c", "echo ready; exec cat"]
HOLDER_READY = b"ready\n"
# The environment of root's helpers; nothing of the tenant's, nothing of ours.
HELPER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
TMP_SIZE_BYTES = 64 * 1024 * 1024
# Reads the instance's variables as the instance's uid, then becomes the engine.
_EXEC_WITH_ENV = f'set -a; . {ENV_FILE}; set +a; . {ARGV_FILE}; exec "$@"'


class SandboxUnavailable(Exception):
    """The sandbox cannot be built here (no bwrap or setpriv, or not root)."""


@cache
def available() -> str | None:
    """None when instance sandboxes can be built here, else why not."""
    if os.geteuid() != 0:
        return "the control plane does not run as root"
    if BWRAP is None:
        return "bwrap is not installed (Debian package bubblewrap)"
    if SETPRIV is None:
        return "setpriv is not installed (Debian package util-linux)"
    return None


def shell_quote(value: str) -> str:
    """`value` as one word for a POSIX shell, exactly (any character but NUL)."""
    return "'" + value.replace("'", "'\\''") + "'"


def argv_file(argv: Sequence[str]) -> bytes:
    """`argv` as a file `/bin/sh` reads with `.`: it sets the positional parameters."""
    return ("set -- " + " ".join(shell_quote(word) for word in argv) + "\n").encode()


def env_file(env: Mapping[str, str]) -> bytes:
    """The instance's variables as a file `/bin/sh` reads with `.` (one assignment a line).
    Names must be shell identifiers (the caller drops any other)."""
    return "".join(f"{name}={shell_quote(value)}\n" for name, value in env.items()).encode()


@dataclass(frozen=True)
class Sandbox:
    """What one instance process may see. Paths are absolute host paths, bound at the same
    place inside (so every path the engine is given stays true)."""

    instance_id: str
    root: Path  # the instance's folder: the only writable place
    uid: int
    etc: Path  # bound read-only as /etc (`sandbox_etc.SandboxEtc.current()`)
    read_only: Sequence[Path] = ()  # the engine's own files (binary, interpreter, libraries)
    sockets: Sequence[Path] = ()  # unix sockets of the platform the instance may use
    tmp_size_bytes: int = TMP_SIZE_BYTES
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def bwrap_args(
        self, info_fd: int, env_fd: int, argv_fd: int, *, as_pid_1: bool = True
    ) -> list[str]:
        """bwrap's options (read from a memfd with `--args`: they never show in a process
        list), up to the command (`command()`). With `as_pid_1` the command is pid 1 of the
        sandbox (an engine started cold); without, bwrap's own reaper is (a sandbox that a
        zygote's child joins: `join_fds`)."""
        args = [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            f"pf-{self.instance_id}"[:63],
            *(["--as-pid-1"] if as_pid_1 else []),
            "--info-fd",
            str(info_fd),
            "--clearenv",
            *_pairs("--setenv", HELPER_ENV.items()),
            "--ro-bind",
            "/usr",
            "/usr",
            *_pairs("--symlink", ((target, link) for link, target in USR_LINKS.items())),
            "--ro-bind",
            str(self.etc),
            "/etc",
            "--proc",
            "/proc",
            *_pairs("--perms", (("0755", "--dir"),)),
            "/dev",
            *_pairs("--dev-bind", ((node, node) for node in DEVICES)),
            *_pairs("--symlink", ((target, link) for link, target in DEV_LINKS.items())),
            "--perms",
            "1777",
            "--size",
            str(self.tmp_size_bytes),
            "--tmpfs",
            "/dev/shm",
            "--perms",
            "1777",
            "--size",
            str(self.tmp_size_bytes),
            "--tmpfs",
            "/tmp",
        ]
        binds = [
            *(("--ro-bind", path) for path in _outermost(self.read_only)),
            *(("--bind", path) for path in self.sockets),
            ("--bind", self.root),
        ]
        made: set[Path] = {Path("/"), Path("/tmp")}
        for kind, path in binds:
            if path.is_relative_to("/usr"):
                continue  # visible already, read-only
            # bwrap would make missing parents mode 0700 (root's): make them traversable
            for parent in reversed(path.parents):
                if parent not in made:
                    args += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            args += [kind, str(path), str(path)]
            made.add(path)
        args += [
            "--perms",
            "0755",
            "--dir",
            str(Path(ENV_FILE).parent),
            "--perms",
            "0444",
            "--file",
            str(env_fd),
            ENV_FILE,
            "--perms",
            "0444",
            "--file",
            str(argv_fd),
            ARGV_FILE,
            "--chdir",
            str(self.root),
        ]
        return args

    def command(self) -> list[str]:
        """What bwrap executes in the sandbox (on its own argv, which `--args` cannot hold):
        `setpriv` to the instance's uid, then the shell that reads the instance's variables
        and the engine's argv (`ENV_FILE`, `ARGV_FILE`) and executes it. Nothing of the
        engine's command is on a root helper's command line."""
        return [
            str(SETPRIV),
            f"--reuid={self.uid}",
            f"--regid={self.uid}",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
            SHELL,
            "-c",
            _EXEC_WITH_ENV,
            "pf-exec",
        ]


def _pairs(option: str, pairs: Iterable[tuple[str, str]]) -> list[str]:
    return [word for a, b in pairs for word in (option, a, b)]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths, without those inside another of them (bound once, by the outer one)."""
    unique = sorted({Path(p) for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return kept


@dataclass
class Launch:
    """The argv and file descriptors of one sandboxed start (see `prepare_launch`). The caller
    passes `pass_fds` to the child, closes them in the parent with `close()` once it has
    started, then reads the sandbox's pid with `engine_pid()`."""

    argv: list[str]
    pass_fds: tuple[int, ...]
    info_read: int
    _to_close: list[int]

    def close_parent_ends(self) -> None:
        for fd in self._to_close:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._to_close.clear()

    def engine_pid(self) -> int | None:
        """The host pid of the sandbox's first process (the engine), as bwrap reports it on
        its info fd; None if bwrap failed before creating it. Blocks until bwrap has written
        it (a few ms) or exited."""
        data = b""
        try:
            while True:
                chunk = os.read(self.info_read, 4096)
                if not chunk:
                    break
                data += chunk
                with contextlib.suppress(ValueError):
                    return int(json.loads(data)["child-pid"])
        finally:
            with contextlib.suppress(OSError):
                os.close(self.info_read)
        return None


def _memfd(name: str, content: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, content)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def prepare_launch(
    sandbox: Sandbox,
    argv: Sequence[str],
    env: Mapping[str, str],
    limits: Sequence[str],
    *,
    as_pid_1: bool = True,
) -> Launch:
    """The argv (`limits` + bwrap, with every other argument in a memfd) that runs `argv` in
    `sandbox` with the environment `env`, and the fds the child must inherit. `engine_pid()`
    then gives the host pid of the sandbox's pid 1: `argv` itself with `as_pid_1`, else
    bwrap's reaper (whose namespaces a zygote's child joins)."""
    if available() is not None or BWRAP is None:
        raise SandboxUnavailable(available() or "bwrap is missing")
    info_read, info_write = os.pipe2(os.O_CLOEXEC)
    env_fd = _memfd("pf-env", env_file({**env, **sandbox.extra_env}))
    argv_fd = _memfd("pf-argv", argv_file(argv))
    words = sandbox.bwrap_args(info_write, env_fd, argv_fd, as_pid_1=as_pid_1)
    args_fd = _memfd("pf-args", b"".join(w.encode() + b"\0" for w in words))
    return Launch(
        argv=[*limits, BWRAP, "--args", str(args_fd), *sandbox.command()],
        pass_fds=(args_fd, env_fd, argv_fd, info_write),
        info_read=info_read,
        _to_close=[args_fd, env_fd, argv_fd, info_write],
    )


# -- telling a sandbox's process from any other ----------------------------------------------


@dataclass(frozen=True)
class ProcessFacts:
    """What /proc/PID/status says of a process (the fields the identity check needs)."""

    real_uid: int
    parent: int
    namespace_pids: tuple[int, ...]  # NSpid: the pid in each pid namespace, outermost first


def process_facts(pid: int) -> ProcessFacts | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    try:
        return ProcessFacts(
            real_uid=int(fields["Uid"].split()[0]),
            parent=int(fields["PPid"]),
            namespace_pids=tuple(int(p) for p in fields.get("NSpid", str(pid)).split()),
        )
    except (KeyError, ValueError, IndexError):
        return None


def reaper_of(pid: int) -> int | None:
    """The host pid of the root bwrap that is `pid`'s parent (the bwrap outside a sandbox
    whose pid 1 is `pid`, or the reaper inside one `pid` joined), if it is one."""
    facts = process_facts(pid)
    if facts is None or BWRAP is None:
        return None
    parent = process_facts(facts.parent)
    if parent is None or parent.real_uid != 0:
        return None
    try:
        exe = os.readlink(f"/proc/{facts.parent}/exe")
    except OSError:
        return None
    return facts.parent if exe == os.path.realpath(BWRAP) else None


def is_sandbox_engine(pid: int, uid: int) -> bool:
    """Whether `pid` is a process of a sandbox of the instance running as `uid`, as its engine
    is: it runs as `uid`, in a pid namespace other than ours, and its parent is a bwrap run by
    root (the engine started cold is pid 1 under the bwrap outside; one forked by a zygote
    lives under bwrap's reaper inside). Only the driver starts root processes, and no other
    instance has `uid`: nothing another tenant runs passes this check. (The instance's own
    processes could: the driver also asks that the process hold the instance's listening
    socket before it counts as serving, and the instance can only confuse itself.)"""
    facts = process_facts(pid)
    if facts is None or facts.real_uid != uid or len(facts.namespace_pids) < 2:
        return False
    return reaper_of(pid) is not None
