"""Who listens on a loopback port: the proof that a port's listener is an instance's own.

Instances share the host's network namespace, so any local process could listen on another
instance's port while that one sleeps. Before the proxy is given a port, the process driver
checks that the socket listening on `127.0.0.1:PORT` is open in the instance's own process
(`held_by`), by the socket's inode.

The listener is found with one exact lookup over the kernel's sock_diag netlink interface
(`NETLINK_SOCK_DIAG`, `SOCK_DIAG_BY_FAMILY` with the 4-tuple 127.0.0.1:PORT -> 0.0.0.0:0 in
state LISTEN, as `ss -l 'sport = :PORT'` does): a few microseconds, where reading
/proc/net/tcp costs time in proportion to every TCP socket of the machine (tens of ms under
load with a thousand of them), and psutil's per-process listing more. A listener on the
wildcard address (0.0.0.0:PORT) is looked up the same way.
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 0x2
TCP_LISTEN = 10
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_NLMSGHDR = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states; inet_diag_sockid: sport, dport (big
# endian), src[4], dst[4] (network order words), interface, cookie[2]
_REQUEST_HEAD = struct.Struct("=BBBBI")
_PORTS = struct.Struct(">HH")
_REQUEST_TAIL = struct.Struct("=16s16sIII")
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue,
# uid, inode
_MESSAGE = struct.Struct("=BBBB48sIIIII")
_TIMEOUT_S = 1.0


def _request(address: str, port: int) -> bytes:
    source = socket.inet_pton(socket.AF_INET, address).ljust(16, b"\0")
    body = (
        _REQUEST_HEAD.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
        + _PORTS.pack(port, 0)
        + _REQUEST_TAIL.pack(source, b"\0" * 16, 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    )
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    return header + body


def listener_inode(port: int, address: str = "127.0.0.1") -> int | None:
    """The inode of the TCP socket listening on `address:port`, None if there is none (or
    the kernel cannot say: then nothing is proven)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(_TIMEOUT_S)
        try:
            sock.sendto(_request(address, port), (0, 0))
            answer = sock.recv(8192)
        except OSError:
            return None
    if len(answer) < _NLMSGHDR.size:
        return None
    _, kind, _, _, _ = _NLMSGHDR.unpack_from(answer)
    if kind == NLMSG_ERROR or len(answer) < _NLMSGHDR.size + _MESSAGE.size:
        return None  # ENOENT: nothing listens there
    *_, inode = _MESSAGE.unpack_from(answer, _NLMSGHDR.size)
    return int(inode) or None


def listener_inodes(port: int) -> set[int]:
    """Inodes of the sockets listening on 127.0.0.1:port or on 0.0.0.0:port."""
    found = {listener_inode(port, "127.0.0.1"), listener_inode(port, "0.0.0.0")}
    return {inode for inode in found if inode is not None}


def holds_socket(pid: int, inodes: set[int]) -> bool:
    """Whether process `pid` has one of the sockets `inodes` open (reads /proc/PID/fd)."""
    if not inodes:
        return False
    names = {f"socket:[{inode}]" for inode in inodes}
    try:
        with os.scandir(f"/proc/{pid}/fd") as entries:
            for entry in entries:
                try:
                    if os.readlink(entry.path) in names:
                        return True
                except OSError:
                    continue
    except OSError:
        return False
    return False


def held_by(pid: int, port: int) -> bool:
    """Whether the listener on loopback `port` is a socket process `pid` has open."""
    return holds_socket(pid, listener_inodes(port))
