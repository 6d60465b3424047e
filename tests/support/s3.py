"""A real S3 API on loopback for tests: moto's server mode, and a TCP relay in front of it
that can cut the line (an S3 outage that keeps the server's data).

    with MotoServer() as moto, FaultyLine(moto.port) as line:
        moto.create_bucket("pf-test")
        env = s3_env(line.port, "pf-test")      # PF_S3_* for `pocketfleet serve`
        line.cut_after(7_000_000)                # relay that many bytes up, then go down
        line.restore()
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

from .ports import free_port, wait_for_port

BIN = Path(sys.executable).parent
ACCESS_KEY = "pf-test-access"
SECRET_KEY = "pf-test-secret"


class MotoServer:
    """`moto_server` on a free loopback port (its state lives in memory)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MotoServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def pending_uploads(self, bucket: str) -> list[dict[str, Any]]:
        uploads: list[dict[str, Any]] = (
            self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        )
        return uploads


def s3_env(port: int, bucket: str) -> dict[str, str]:
    """`PF_S3_*` settings pointing `pocketfleet serve` at a loopback S3 endpoint."""
    return {
        "PF_S3_ENDPOINT": f"http://127.0.0.1:{port}",
        "PF_S3_BUCKET": bucket,
        "PF_S3_REGION": "us-east-1",
        "PF_S3_ACCESS_KEY": ACCESS_KEY,
        "PF_S3_SECRET_KEY": SECRET_KEY,
        "PF_S3_PATH_STYLE": "true",
        "PF_S3_PART_SIZE_MB": "5",
        "PF_S3_RETRY_ATTEMPTS": "3",
        "PF_S3_RETRY_WAIT_S": "0.1",
    }


class FaultyLine:
    """A TCP relay 127.0.0.1:port -> upstream that can fail like a dead S3 endpoint: `down()`
    drops every connection and refuses new ones; `cut_after(n)` relays `n` more request bytes
    first. Bounded to loopback; stops with the context."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._up = True
        self._budget: int | None = None
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closing = False
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> FaultyLine:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self._listener.close()
        self.down()

    def down(self) -> None:
        with self._lock:
            self._up = False
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def cut_after(self, nbytes: int) -> None:
        with self._lock:
            self._budget = nbytes

    def restore(self) -> None:
        with self._lock:
            self._up = True
            self._budget = None

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                up = self._up
            if not up:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, dest: socket.socket, upward: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upward:
                    with self._lock:
                        if self._budget is not None:
                            self._budget -= len(data)
                            if self._budget <= 0:
                                self._budget = None
                                cut = True
                            else:
                                cut = False
                        else:
                            cut = False
                    if cut:
                        self.down()
                        break
                dest.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._conns.difference_update((source, dest))
