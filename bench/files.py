"""Memory of our runtime while a 100 MB file goes in and out, with local storage and with S3.

    .venv/bin/python bench/files.py [--mb 100]

For each backend (`local`: `pb_data/storage`; `s3`: a moto server on loopback, turned on
through the settings API) a fresh `python -m instance_runtime serve` process gets a collection
with one file field, a small warm-up upload and download (so that lazy imports such as boto3
are paid before measuring), then one upload of `--mb` MB of random bytes through the records
API and one streamed download of it (checked by SHA-256). The runtime's RSS is read from
`/proc/PID/status` around each step: `VmRSS` after it, and `VmHWM` (peak RSS), reset before
each step with `/proc/PID/clear_refs` so that the peak is the step's own. The wall time of each
step is printed for information only (moto is no model of S3's speed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.ports import free_port  # noqa: E402
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer  # noqa: E402

EMAIL, PASSWORD = "bench@example.com", "bench-pass-12345"
BUCKET = "pf-bench-files"


def status_kb(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS


@dataclass
class Step:
    name: str
    seconds: float
    rss_mb: float
    peak_mb: float


class Runtime:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bench-files-"))
        self.data = self.root / "pb_data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        subprocess.run(
            [sys.executable, "-m", "instance_runtime", "superuser", "upsert", EMAIL, PASSWORD,
             "--dir", str(self.data)],
            check=True, capture_output=True, cwd=ROOT,
        )  # fmt: skip
        self.log = (self.root / "runtime.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "instance_runtime", "serve", "--dir", str(self.data),
             "--http", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the runtime did not start")
            time.sleep(0.05)
        token = httpx.post(
            f"{self.url}/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        ).json()["token"]
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": token}, timeout=600)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def _measure(rt: Runtime, name: str, fn: Any) -> tuple[Step, Any]:
    reset_peak(rt.pid)
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    kb = status_kb(rt.pid)
    return Step(name, seconds, kb["VmRSS"] / 1024, kb["VmHWM"] / 1024), result


def run(backend: str, payload: Path, digest: bytes, moto: MotoServer) -> list[Step]:
    rt = Runtime()
    try:
        if backend == "s3":
            s3 = {
                "enabled": True, "bucket": BUCKET, "region": "us-east-1", "endpoint": moto.url,
                "accessKey": ACCESS_KEY, "secret": SECRET_KEY, "forcePathStyle": True,
            }  # fmt: skip
            _ok(rt.client.patch("/api/settings", json={"s3": s3}))
        size = payload.stat().st_size
        field = {"name": "doc", "type": "file", "maxSelect": 1, "maxSize": size + (1 << 20)}
        _ok(rt.client.post("/api/collections", json={"name": "blobs", "fields": [field]}))
        url = "/api/collections/blobs/records"
        warm = _ok(rt.client.post(url, files=[("doc", ("warm.bin", os.urandom(1 << 20)))]))
        rt.client.get(f"/api/files/blobs/{warm['id']}/{warm['doc']}").raise_for_status()
        kb = status_kb(rt.pid)
        steps = [Step("idle (warmed up)", 0.0, kb["VmRSS"] / 1024, kb["VmHWM"] / 1024)]

        def upload() -> dict[str, Any]:
            with payload.open("rb") as fh:
                return _ok(rt.client.post(url, files=[("doc", ("big.bin", fh))]))

        step, record = _measure(rt, f"upload {size >> 20} MB", upload)
        steps.append(step)

        def download() -> bytes:
            h = hashlib.sha256()
            with rt.client.stream("GET", f"/api/files/blobs/{record['id']}/{record['doc']}") as r:
                r.raise_for_status()
                for chunk in r.iter_bytes(1 << 20):
                    h.update(chunk)
            return h.digest()

        step, got = _measure(rt, f"download {size >> 20} MB", download)
        if got != digest:
            raise RuntimeError("the downloaded file differs from the upload")
        steps.append(step)
        return steps
    finally:
        rt.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-files-payload-"))
    try:
        payload = scratch / "payload.bin"
        h = hashlib.sha256()
        with payload.open("wb") as out:
            for _ in range(args.mb):
                block = os.urandom(1 << 20)
                h.update(block)
                out.write(block)
        with MotoServer() as moto:
            moto.create_bucket(BUCKET)
            results = {b: run(b, payload, h.digest(), moto) for b in ("local", "s3")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"runtime RSS, {args.mb} MB file (MiB; peak = VmHWM during the step)")
    print(f"{'backend':8} {'step':22} {'RSS after':>10} {'peak':>8} {'seconds':>8}")
    for backend, steps in results.items():
        for s in steps:
            print(f"{backend:8} {s.name:22} {s.rss_mb:10.1f} {s.peak_mb:8.1f} {s.seconds:8.2f}")
    base = {b: steps[0].rss_mb for b, steps in results.items()}
    for backend, steps in results.items():
        growth = max(s.peak_mb for s in steps[1:]) - base[backend]
        print(f"{backend}: peak growth over idle {growth:.1f} MiB ({growth / args.mb:.2%} of file)")


if __name__ == "__main__":
    main()
