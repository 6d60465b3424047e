"""A zygote for the pocketfleet engine: one process that has imported the runtime and forks a
child per instance start, so that a start (a wake) costs a fork instead of an interpreter
start and its imports (about half a second).

    python -m instance_runtime.zygote --socket PATH

Protocol, on the Unix stream socket PATH (created mode 0600: only its owner may connect): one
request per connection, a JSON line

    {"argv": [PYTHON, "-m", "instance_runtime", "serve", ...],   # the cold-start command
     "cwd": DIR, "env": {...}, "log": FILE, "uid": N | null, "nofile": N, "address_space": N}

answered by `{"pid": N}` (the child is serving, or about to) or `{"error": "..."}`. The child
is what the cold command would have been: its own session, `cwd`, a fresh environment `env`,
stdout and stderr appended to `log`, stdin /dev/null, the rlimits, and (when `uid` is given
and the zygote runs as root) that uid and gid with no supplementary groups; it then runs
`python -m instance_runtime ARGS` in-process. Only `serve` commands are accepted.

Optional members: `"nproc": N` (RLIMIT_NPROC), `"no_new_privs": true`, `"show": [{"folder":
DIR, "paths": [PATH, ...]}, ...]`, `"join": PID` and `"pass": [ROLE, ...]` (below).

`show` (root only; without `join`) is for a child that runs as a uid which cannot enter DIR
(the interpreter living under /root, mode 0700): the child gets a mount namespace of its own
(mounts there never reach the host's) in which DIR is an empty read-only tmpfs (mode 0755)
holding only the PATHs inside it, each bound read-only (nosuid, nodev) at its own place. So
whatever the child reads by path later, as that uid (a module a tenant's hook imports at
request time, a data file of a library), is there, and the rest of DIR is not. The zygote
answers only once that is done (an `error` if it failed: the caller starts the instance cold).

`join` is the
host pid of a process in a sandbox the child must enter (pid 1 of its namespaces, as made by
bubblewrap): the zygote forks a helper that joins PID's mount, pid, ipc and uts
namespaces (`setns`), and the helper forks the child inside them and exits, so the child is a
process of that sandbox, sees only its file system and its processes, and is reaped by its
pid 1.

File descriptors sent with the request (SCM_RIGHTS) are named, in order, by `"pass": [ROLE,
...]` (without it, one descriptor is a `hold`); each stays open in the child from fd 3 on, in
that order (close-on-exec), and every other descriptor is closed:
- `hold`: kept for the child's life (the sandbox's holder waits for it to close, so the
  sandbox ends with the child);
- `ready`: a pipe's write end on which the child writes `serving\n` once it listens (after
  its lifespan start-up; `instance_runtime.server.notify_serving`), so that the control plane
  waits on it instead of polling the port; EOF first means the child died;
- `go` (a standby): the child becomes the instance's process (everything above: uid, limits,
  environment, log, folder), writes `parked\n` on `ready`, then waits on this pipe's read end
  before it runs anything of the instance: `go\n` and it serves; EOF (the control plane
  dropped the standby, or died) and it exits. A wake then costs the instance's own start
  only. `go` needs `ready`.

The zygote stays free of threads and event loops (each child starts its own), reaps its
children, and exits when the process that started it dies (PR_SET_PDEATHSIG), so that a
restarted control plane never talks to a zygote holding older code. Its children live on.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import functools
import gc
import importlib
import json
import os
import pkgutil
import resource
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from typing import Any, NoReturn

# Imported before any fork, with every module of `instance_runtime`: a child may run as a user
# who cannot read the interpreter's own files, so that little should be left to import late.
PRELOAD = (
    "encodings.idna",
    "encodings.ascii",
    "encodings.latin_1",
    "instance_runtime.__main__",
    "instance_runtime.server",
    "uvicorn",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.auto",
)
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_JOIN_TIMEOUT_S = 5.0
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
# (name under /proc/PID/ns, CLONE_NEW* flag): mount last, as it changes what /proc is
_NAMESPACES = (
    ("ipc", 0x08000000),
    ("uts", 0x04000000),
    ("pid", 0x20000000),
    ("mnt", 0x00020000),
)
_MAX_REQUEST = 1 << 20
_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT = 0x1, 0x2, 0x4, 0x20
_MS_BIND, _MS_REC, _MS_SLAVE = 0x1000, 0x4000, 0x80000
_SHOWN_TMPFS = "mode=0755,size=64k,nr_inodes=1024"
_SHOW_TIMEOUT_S = 5.0
_REAP_EVERY_S = 1.0
_ROLES = ("hold", "ready", "go")  # what a descriptor sent with a request is for
_FIRST_KEPT_FD = 3
_GO = b"go\n"
_PARKED = b"parked\n"


def preload() -> None:
    """Import what serving needs (optional accelerators may be missing)."""
    import instance_runtime

    names = [*PRELOAD]
    for module in pkgutil.walk_packages(instance_runtime.__path__, "instance_runtime."):
        if module.name not in (__name__, "instance_runtime.cli"):
            names.append(module.name)
    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    gc.collect()
    gc.freeze()  # the collector leaves what is loaded now alone: pages stay shared by children
    if threading.active_count() != 1:
        raise RuntimeError("the zygote must not run threads before it forks")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@functools.cache
def _mount_call() -> Any:
    """libc's mount(2) wrapper, its arguments typed (flags are an unsigned long)."""
    mount = _libc().mount
    mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    return mount


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    encoded = [None if v is None else os.fsencode(v) for v in (source, target, fstype)]
    if _mount_call()(*encoded, flags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source or ''} on {target}: {os.strerror(err)}")


def _read_only(path: str) -> None:
    """Make the mount at `path` read-only, nosuid and nodev (for this namespace only)."""
    flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    _mount(None, path, None, flags)


def _place(folder: str, path: str, is_dir: bool) -> None:
    """Create `path` (a folder, or an empty file) and its parents up to `folder`, mode 0755
    whatever the umask."""
    parts = os.path.relpath(path, folder).split(os.sep)
    current = folder
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        if index < len(parts) - 1 or is_dir:
            with contextlib.suppress(FileExistsError):
                os.mkdir(current)
            os.chmod(current, 0o755)
        else:
            os.close(os.open(current, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _inside(path: str, folder: str) -> bool:
    return (
        os.path.isabs(path)
        and os.path.normpath(path) == path != folder
        and (os.path.commonpath([path, folder]) == folder)
    )


def show_runtime(covers: list[dict[str, Any]]) -> None:
    """In a child, as root: the mount namespace of the module docstring (`show`)."""
    if _libc().unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    _mount(None, "/", None, _MS_REC | _MS_SLAVE)  # from here on, nothing reaches the host
    for cover in covers:
        folder, paths = str(cover["folder"]), sorted(str(path) for path in cover["paths"])
        paths = [p for i, p in enumerate(paths) if not any(_inside(p, q) for q in paths[:i])]
        if not (os.path.isabs(folder) and os.path.normpath(folder) == folder != "/"):
            raise ValueError(f"not a folder to cover: {folder!r}")
        if not all(_inside(path, folder) for path in paths):
            raise ValueError(f"every path to show must be inside {folder}")
        # opened before the folder is covered, bound from their descriptors after (a bind
        # mount's source must be a mount of this namespace: hence after the unshare)
        opened = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in paths]
        try:
            _mount("pf-runtime", folder, "tmpfs", _MS_NOSUID | _MS_NODEV, _SHOWN_TMPFS)
            for path, fd in opened:
                _place(folder, path, stat.S_ISDIR(os.fstat(fd).st_mode))
                _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
                _read_only(path)
            _read_only(folder)
        finally:
            for _, fd in opened:
                os.close(fd)


def reap() -> None:
    """Collect exited children (they would stay zombies otherwise)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def read_request(conn: socket.socket, fds: list[int]) -> dict[str, Any]:
    """The request on `conn`; file descriptors sent with it are appended to `fds`."""
    data, received, _, _ = socket.recv_fds(conn, 65536, 4)
    fds.extend(received)
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk or len(data) > _MAX_REQUEST:
            raise ValueError("incomplete request")
        data += chunk
    request: dict[str, Any] = json.loads(data)
    argv = request.get("argv")
    if not (isinstance(argv, list) and argv[1:4] == ["-m", "instance_runtime", "serve"]):
        raise ValueError("only `python -m instance_runtime serve ...` can be spawned")
    roles = request.get("pass", ["hold"] if fds else [])
    if (
        not isinstance(roles, list)
        or len(roles) != len(fds)
        or len(set(roles)) != len(roles)
        or not set(roles) <= set(_ROLES)
        or ("go" in roles and "ready" not in roles)
    ):
        raise ValueError(f"`pass` must name each descriptor sent, once, among {_ROLES}")
    request["pass"] = roles
    return request


def kept_fd(request: dict[str, Any], role: str) -> int | None:
    """Where the descriptor sent for `role` is in the child once it has become the
    instance's process (`become`), if one was sent."""
    roles: list[str] = request["pass"]
    return _FIRST_KEPT_FD + roles.index(role) if role in roles else None


def become(request: dict[str, Any], open_sockets: list[socket.socket], keep: list[int]) -> None:
    """In the child: turn into the instance's process (see the module docstring); the
    descriptors `keep` stay open from fd 3 on, in that order."""
    for sock in open_sockets:
        sock.close()
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    os.setsid()
    os.chdir(request["cwd"])
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # first out of the way (a descriptor received may sit where another one goes), then placed
    past = _FIRST_KEPT_FD + len(keep)
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, past) for fd in keep]
    for index, fd in enumerate(moved):
        os.dup2(fd, _FIRST_KEPT_FD + index, inheritable=False)
    os.closerange(past, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    nofile, address_space = int(request["nofile"]), int(request["address_space"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    if request.get("nproc") is not None:
        nproc = int(request["nproc"])
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    uid = request.get("uid")
    if uid is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # from root to another uid: every capability is gone
    if request.get("no_new_privs") and _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    sys.argv = [request["argv"][0], *request["argv"][3:]]


def join_namespaces(pid: int) -> None:
    """Enter the namespaces of process `pid` (root only; this process must have one thread).
    The pid namespace applies to the children forked after this."""
    fds = {kind: os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY) for name, kind in _NAMESPACES}
    try:
        for kind, fd in fds.items():
            if _libc().setns(fd, kind) != 0:
                raise OSError(ctypes.get_errno(), f"setns({pid}, {kind:#x}) failed")
    finally:
        for fd in fds.values():
            os.close(fd)


def spawn(request: dict[str, Any], open_sockets: list[socket.socket], fds: list[int]) -> int:
    """Fork a child that serves as `request` says (inside a sandbox when it names one to
    join); return its pid as this zygote sees it. `fds` are the descriptors of
    `request["pass"]`, in its order."""
    keep = list(fds)
    join = request.get("join")
    if join is None and not request.get("show"):
        pid = os.fork()
        if pid == 0:
            serve_child(request, open_sockets, keep)
        return pid
    if join is None:
        return spawn_shown(request, open_sockets, keep)
    # The child must be adopted by the sandbox's pid 1 (the reaper of its pid namespace), and
    # a process is adopted by the reaper of the namespace its dying parent lives in: so the
    # helper that joins forks a first process inside, which forks the child and exits. The
    # child says it is ready over a socket on which the kernel gives its pid as we see it.
    ready_in, ready_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ready_in.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            ready_in.close()
            join_namespaces(int(join))
            if os.fork() == 0:  # the first process inside
                if os.fork() == 0:  # the child
                    while os.getppid() != 1:  # until the sandbox's reaper has adopted it
                        time.sleep(0.0002)
                    ready_out.send(b"ready")
                    ready_out.close()
                    serve_child(request, open_sockets, keep)
                os._exit(0)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    ready_out.close()
    try:
        os.waitpid(helper, 0)
        ready_in.settimeout(_JOIN_TIMEOUT_S)
        _, ancillary, _, _ = ready_in.recvmsg(16, socket.CMSG_SPACE(_CREDENTIALS.size))
    except OSError as err:
        raise OSError(f"could not enter the sandbox of pid {join}: {err}") from err
    finally:
        ready_in.close()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _, _ = _CREDENTIALS.unpack(data[: _CREDENTIALS.size])
            return int(pid)
    raise OSError(f"the child in the sandbox of pid {join} did not say who it is")


def spawn_shown(request: dict[str, Any], open_sockets: list[socket.socket], keep: list[int]) -> int:
    """Fork a child that first gets the mount namespace of `request["show"]`, and return its
    pid once it has it; raise `OSError` (and let it exit) if it could not."""
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(ready_read)
        try:
            show_runtime(list(request["show"]))
            os.write(ready_write, b"ok")
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(ready_write, f"{type(exc).__name__}: {exc}".encode()[:4000])
            os._exit(1)
        os.close(ready_write)
        serve_child(request, open_sockets, keep)
    os.close(ready_write)
    try:
        said = b""
        if select.select([ready_read], [], [], _SHOW_TIMEOUT_S)[0]:
            said = os.read(ready_read, 4096)
    finally:
        os.close(ready_read)
    if said != b"ok":
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        reason = said.decode(errors="replace") or "no answer"
        raise OSError(f"could not show the runtime to the child: {reason}")
    return pid


def wait_for_go(go: int, ready: int) -> bool:
    """In a standby child that has become the instance's process: say so on `ready`, then
    wait on `go`; whether to serve (False: the standby was dropped)."""
    os.write(ready, _PARKED)
    said = b""
    while not said.endswith(b"\n"):
        try:
            chunk = os.read(go, 16)
        except InterruptedError:
            continue
        if not chunk:
            break
        said += chunk
    os.close(go)
    return said == _GO


def serve_child(
    request: dict[str, Any], open_sockets: list[socket.socket], keep: list[int]
) -> NoReturn:
    """In the child: become the instance's process and serve until it ends (a standby first
    waits for its `go`); never returns."""
    code = 1
    try:
        become(request, open_sockets, keep)
        ready, go = kept_fd(request, "ready"), kept_fd(request, "go")
        if go is not None and ready is not None and not wait_for_go(go, ready):
            os._exit(0)
        from instance_runtime import server
        from instance_runtime.__main__ import main

        if ready is not None:
            server.notify_serving(ready)
        code = main(request["argv"][3:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve_forever(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    listener.settimeout(_REAP_EVERY_S)
    print(f"zygote {os.getpid()} ready on {path}", flush=True)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            reap()
            continue
        with conn:
            conn.settimeout(5)
            fds: list[int] = []
            try:
                request = read_request(conn, fds)
                answer: dict[str, Any] = {"pid": spawn(request, [listener, conn], fds)}
            except (ValueError, OSError, KeyError, TypeError) as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                for fd in fds:
                    os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer).encode() + b"\n")
        reap()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instance_runtime.zygote")
    parser.add_argument("--socket", required=True, help="Unix socket to listen on")
    args = parser.parse_args(argv)
    die_with_parent()
    preload()
    serve_forever(args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
