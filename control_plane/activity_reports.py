"""The receiving end of the activity engines report about themselves (the `pocketfleet`
runtime: `instance_runtime.activity` has the sender and the datagram's format).

One Unix datagram socket, `PF_DATA_DIR/run/activity.sock`, for every instance. Instances run as
users of their own, so the socket is writable by all; trust comes from the kernel instead: the
socket asks for each sender's credentials (`SO_PASSCRED`), and a report counts only for the
instance whose folder is the sending process's working directory (every instance process runs
in its own folder, `PF_DATA_DIR/instances/ID`, which no other instance can enter) and, when
instances run as their own users, whose folder that user owns. A process can therefore only
ever speak for its own instance; anything else is dropped, as is a malformed datagram.

Reports land in the `ActivityTracker` (`engine_reported`), beside what the proxy layer sees.
Reading costs one `recvmsg` and one `readlink` per report, and engines send at most one per
second while busy and none while idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from proxy.activity import ActivityTracker

log = logging.getLogger(__name__)

_MAX_REPORT = 4096
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid

# instance id -> its host, or None when there is no such (live) instance
HostOf = Callable[[str], Awaitable[str | None]]


class ActivityReceiver:
    """See the module docstring. `open()` binds and starts reading; `close()` stops."""

    def __init__(
        self, path: Path, instances_dir: Path, host_of: HostOf, activity: ActivityTracker
    ) -> None:
        self.path = path
        self.instances_dir = instances_dir.resolve()
        self.host_of = host_of
        self.activity = activity
        self._sock: socket.socket | None = None
        self._hosts: dict[str, str] = {}
        self._lookups: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        self.path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o711)
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o666)  # any instance user may send; see the module docstring
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        for task in self._lookups:
            task.cancel()
        if self._sock is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            self.path.unlink(missing_ok=True)

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(64):  # then let others run; the loop calls again while data waits
            try:
                data, ancillary, _flags, _addr = self._sock.recvmsg(
                    _MAX_REPORT, socket.CMSG_SPACE(_CREDENTIALS.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("activity socket: %s", err)
                return
            pid, uid = _sender(ancillary)
            if pid is not None:
                self.received(data, pid, uid)

    def received(self, data: bytes, pid: int, uid: int | None) -> None:
        """One report from process `pid` (running as `uid`): counted for its instance."""
        instance_id = self.instance_of(pid, uid)
        if instance_id is None:
            return
        try:
            report = orjson.loads(data)
            last = float(report["last_request_at"])
            streams = int(report["streams"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        host = self._hosts.get(instance_id)
        if host is not None:
            self.activity.engine_reported(host, last, streams)
            return
        task = asyncio.create_task(self._look_up(instance_id, last, streams))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _look_up(self, instance_id: str, last: float, streams: int) -> None:
        host = await self.host_of(instance_id)
        if host is not None:
            self._hosts[instance_id] = host  # an instance's name never changes
            self.activity.engine_reported(host, last, streams)

    def instance_of(self, pid: int, uid: int | None) -> str | None:
        """The id of the instance process `pid` serves: the folder it runs in, when that is
        an instance's folder (owned by `uid` unless we run instances as ourselves)."""
        try:
            folder = Path(os.readlink(f"/proc/{pid}/cwd"))
            owner = folder.stat().st_uid
        except OSError:
            return None
        if folder.parent != self.instances_dir:
            return None
        if uid is not None and uid != os.geteuid() and owner != uid:
            return None
        return folder.name


def _sender(ancillary: list[tuple[int, int, bytes]]) -> tuple[int | None, int | None]:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, uid, _gid = _CREDENTIALS.unpack(data[: _CREDENTIALS.size])
            return pid, uid
    return None, None
