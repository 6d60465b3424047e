"""A private Docker engine (`dockerd`, Debian's `docker.io`) for a test module.

    with PrivateDockerd() as engine:
        engine.host            # unix:///tmp/pf-dockerd-XXXX/docker.sock, for PF_DOCKER_HOST
        engine.client()        # docker.APIClient on it

It runs as root with everything of its own in one temporary folder: `--data-root`,
`--exec-root`, `--pidfile`, its socket (`-H unix://...`), and no networking of its own
(`--bridge=none --iptables=false --ip6tables=false --ip-masq=false`: instances use host
networking), so it touches no other engine and no firewall. `stop` ends only the daemon it
started (SIGTERM, which stops its containers and its containerd, then SIGKILL) and removes its
folder (unmounting what it left mounted there first).

`unavailable()` says why no dockerd can run here (not root, not installed), for a clean skip.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import docker

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 20.0


def unavailable() -> str | None:
    """Why a private dockerd cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (scripts/install-system.sh installs docker.io)"
    return None


class PrivateDockerd:
    def __init__(self) -> None:
        self.base: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        assert self.base is not None
        return self.base / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.host, version="auto", timeout=60)

    def start(self) -> None:
        """Start the daemon and wait until its API answers; raises with its log if not."""
        why = unavailable()
        if why is not None:
            raise RuntimeError(why)
        self.base = Path(tempfile.mkdtemp(prefix="pf-dockerd-", dir="/tmp"))
        atexit.register(self.stop)
        log = (self.base / "dockerd.log").open("ab")
        argv = [
            "dockerd",
            "--data-root",
            str(self.base / "data"),
            "--exec-root",
            str(self.base / "exec"),
            "--pidfile",
            str(self.base / "dockerd.pid"),
            "-H",
            self.host,
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--storage-driver=overlay2",
        ]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.output()
                self.stop()
                raise RuntimeError(f"dockerd exited at start:\n{output}")
            if self.socket.exists():
                with contextlib.suppress(Exception):
                    client = self.client()
                    client.ping()
                    client.close()
                    return
            time.sleep(0.05)
        output = self.output()
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {_START_TIMEOUT_S:g}s:\n{output}")

    def output(self) -> str:
        if self.base is None:
            return ""
        try:
            return (self.base / "dockerd.log").read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """End the daemon we started (its containers and containerd go with it) and remove
        its folder. Idempotent."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        base, self.base = self.base, None
        if base is None:
            return
        # overlay and shm mounts the daemon may have left under its folder: deepest first
        prefix = str(base) + "/"
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> PrivateDockerd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
