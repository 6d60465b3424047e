"""Who listens on a port, by the kernel's sock_diag: real sockets, real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from control_plane.drivers.listeners import held_by, listener_inode, listener_inodes


def test_a_listener_is_found_by_its_inode() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        assert listener_inode(port) == os.fstat(server.fileno()).st_ino
        assert held_by(os.getpid(), port)


def test_a_wildcard_listener_counts_too() -> None:
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        port = server.getsockname()[1]

        assert listener_inodes(port) == {os.fstat(server.fileno()).st_ino}


def test_bound_but_not_listening_and_free_ports_have_no_listener() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]

        assert listener_inodes(port) == set()
        assert not held_by(os.getpid(), port)


def test_another_process_s_listener_is_not_ours() -> None:
    script = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True); time.sleep(60)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        port = int(other.stdout.readline())
        deadline = time.monotonic() + 10
        while not listener_inodes(port) and time.monotonic() < deadline:
            time.sleep(0.01)

        assert listener_inodes(port)
        assert held_by(other.pid, port)
        assert not held_by(os.getpid(), port)
    finally:
        other.kill()
        other.wait()
