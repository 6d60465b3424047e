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

The zygote stays free of threads and event loops (each child starts its own), reaps its
children, and exits when the process that started it dies (PR_SET_PDEATHSIG), so that a
restarted control plane never talks to a zygote holding older code. Its children live on.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import os
import pkgutil
import resource
import signal
import socket
import sys
import threading
import traceback
from typing import Any

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
_MAX_REQUEST = 1 << 20
_REAP_EVERY_S = 1.0


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


def die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def reap() -> None:
    """Collect exited children (they would stay zombies otherwise)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def read_request(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk or len(data) > _MAX_REQUEST:
            raise ValueError("incomplete request")
        data += chunk
    request: dict[str, Any] = json.loads(data)
    argv = request.get("argv")
    if not (isinstance(argv, list) and argv[1:4] == ["-m", "instance_runtime", "serve"]):
        raise ValueError("only `python -m instance_runtime serve ...` can be spawned")
    return request


def become(request: dict[str, Any], open_sockets: list[socket.socket]) -> None:
    """In the child: turn into the instance's process (see the module docstring)."""
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
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    nofile, address_space = int(request["nofile"]), int(request["address_space"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    uid = request.get("uid")
    if uid is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    sys.argv = [request["argv"][0], *request["argv"][3:]]


def spawn(request: dict[str, Any], open_sockets: list[socket.socket]) -> int:
    """Fork a child that serves as `request` says; return its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        become(request, open_sockets)
        from instance_runtime.__main__ import main

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
            try:
                answer: dict[str, Any] = {"pid": spawn(read_request(conn), [listener, conn])}
            except (ValueError, OSError, KeyError, TypeError) as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
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
