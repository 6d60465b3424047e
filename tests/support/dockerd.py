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

`init_swarm()` makes it a one-node Swarm (its manager, advertised and listening on 127.0.0.1
at free ports, so two test swarms never collide) with the node labelled `pocketfleet.node=true`.
`NetworkNamespace` is a network namespace (`ip netns` + a veth pair, its own address) in
which `PrivateDockerd(netns=...)` runs a daemon (`nsenter --net`: only the network is its
own), so that `join_swarm` makes it a second node with an address of its own.
Swarm makes a `docker_gwbridge` bridge in the host's network namespace, which outlives the
daemon: `stop` deletes it when it did not exist before `init_swarm`.

`unavailable()` says why no dockerd can run here (not root, not installed), for a clean skip.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import docker

_GWBRIDGE = Path("/sys/class/net/docker_gwbridge")
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 20.0


def unavailable() -> str | None:
    """Why a private dockerd cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (scripts/install-system.sh installs docker.io)"
    return None


def _label(client: docker.APIClient, node_id: str) -> None:
    node = client.inspect_node(node_id)
    spec = {**node["Spec"], "Labels": {"pocketfleet.node": "true"}}
    client.update_node(node_id, node["Version"]["Index"], spec)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NetworkNamespace:
    """`ip netns add pf-swPID-N` with a veth pair: `host_address` on our side, `address` in
    it (a /30 of 10.231.0.0/16 of our pid's). Removed by `close` (the veth goes with it)."""

    _made = 0

    def __init__(self) -> None:
        NetworkNamespace._made += 1
        number = os.getpid() % 16000 * 4 + NetworkNamespace._made % 4
        self.name = f"pf-sw{os.getpid()}-{NetworkNamespace._made}"
        self.host_if = f"pfh{os.getpid()}{NetworkNamespace._made}"[:15]
        base = f"10.231.{number // 64 % 250}.{number % 64 * 4}"
        prefix, last = base.rsplit(".", 1)
        self.host_address = f"{prefix}.{int(last) + 1}"
        self.address = f"{prefix}.{int(last) + 2}"
        self.path = f"/var/run/netns/{self.name}"
        inside = f"pfn{os.getpid()}{NetworkNamespace._made}"[:15]
        steps = [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", inside],
            ["ip", "link", "set", inside, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
            ["ip", "-n", self.name, "addr", "add", f"{self.address}/30", "dev", inside],
            ["ip", "-n", self.name, "link", "set", inside, "up"],
            ["ip", "-n", self.name, "link", "set", "lo", "up"],
        ]
        try:
            for step in steps:
                subprocess.run(step, check=True, capture_output=True)
        except subprocess.CalledProcessError:
            self.close()
            raise

    def close(self) -> None:
        subprocess.run(["ip", "link", "delete", self.host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.name], check=False, capture_output=True)


class PrivateDockerd:
    def __init__(self, netns: NetworkNamespace | None = None) -> None:
        self.netns = netns
        self.base: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.made_gwbridge = False
        self.swarm_address = ""

    @property
    def socket(self) -> Path:
        assert self.base is not None
        return self.base / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.host, version="auto", timeout=60)

    def init_swarm(self, address: str = "127.0.0.1") -> str:
        """Make this engine a Swarm's manager (advertised and listening on `address`), its
        node labelled for pocketfleet; returns the node's id."""
        client = self.client()
        self.made_gwbridge = self.netns is None and not _GWBRIDGE.exists()
        try:
            port = _free_port()
            data_port = 30000 + _free_port() % 19000  # the engine takes 1024-49151 only
            client.init_swarm(
                advertise_addr=f"{address}:{port}",
                listen_addr=f"{address}:{port}",
                data_path_port=data_port,
            )
            self.swarm_address = f"{address}:{port}"
            node_id = str(client.info()["Swarm"]["NodeID"])
            _label(client, node_id)
            return node_id
        finally:
            client.close()

    def join_swarm(self, manager: PrivateDockerd) -> str:
        """Join `manager`'s swarm as a worker, advertising this engine's namespace address;
        labelled for pocketfleet (by the manager). Returns the node's id."""
        assert self.netns is not None, "a second node needs an address of its own"
        address = self.netns.address
        with contextlib.closing(manager.client()) as boss, contextlib.closing(self.client()) as me:
            token = boss.inspect_swarm()["JoinTokens"]["Worker"]
            me.join_swarm(
                [manager.swarm_address],
                token,
                listen_addr=f"{address}:{_free_port()}",
                advertise_addr=address,
                data_path_addr=address,
            )
            node_id = str(me.info()["Swarm"]["NodeID"])
            _label(boss, node_id)
            return node_id

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
        if self.netns is not None:
            argv = ["nsenter", f"--net={self.netns.path}", *argv]
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
        if self.made_gwbridge and _GWBRIDGE.exists():
            subprocess.run(["ip", "link", "delete", "docker_gwbridge"], check=False)
        self.made_gwbridge = False
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
