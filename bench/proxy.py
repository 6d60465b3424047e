"""Benchmark: how fast an instance is live, and what the embedded proxy costs.

    .venv/bin/python bench/proxy.py [--instances 5] [--duration 5] [--concurrency 16]

Starts `pocketfleet serve` on a scratch data folder, signs up, then prints in one run:
- seconds from `POST /api/instances` to the first 200 of `/api/health` through the proxy
  (NAME.localhost), over several instances (min / median / max);
- requests/s and p50/p99 of a small JSON request (`GET /api/health`) and of a 1 MB static
  file (from the instance's pb_public) direct to the instance, through the embedded proxy and
  through Caddy, with ratios against direct (the baseline, measured in this run). Caddy (the
  Debian package) runs as `serve --proxy caddy --start-caddy`'s child; the embedded proxy
  answers on PF_HTTP in the same run. `--no-caddy` leaves Caddy out.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

# Run as a script, this file's folder comes first on sys.path, and this file (proxy.py) would
# shadow the `proxy` package that _load imports: drop the folder, load _load by its path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
_spec = importlib.util.spec_from_file_location("bench_load", HERE / "_load.py")
assert _spec is not None and _spec.loader is not None
_load = sys.modules["bench_load"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_load)
format_table, measure, run_load = _load.format_table, _load.measure, _load.run_load

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ok(client: httpx.Client, url: str, headers: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get(url, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.002)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--caddy", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    use_caddy = args.caddy and shutil.which("caddy") is not None

    root = Path(tempfile.mkdtemp(prefix="pf-bench-"))
    root.chmod(0o711)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PF_")}
    env.update(PF_HTTP=f"127.0.0.1:{port}", PF_DATA_DIR=str(root / "data"))
    caddy_port = free_port()
    if use_caddy:
        env.update(
            PF_PROXY="caddy",
            PF_START_CADDY="true",
            PF_CADDY_HTTP=f"127.0.0.1:{caddy_port}",
            PF_CADDY_HTTPS=f"127.0.0.1:{free_port()}",
            PF_IDLE_TIMEOUT_S="0",
        )
    serve = subprocess.Popen(
        [str(BIN / "pocketfleet"), "serve", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60, trust_env=False) as api:
            wait_ok(api, "/api/health", {}, 60)
            creds = {"email": "bench@example.com", "password": "bench-password"}
            api.post("/api/accounts", json=creds).raise_for_status()
            token = api.post("/api/sessions", json=creds).json()["token"]
            api.headers["Authorization"] = f"Bearer {token}"

            to_first_200: list[float] = []
            for i in range(args.instances):
                name = f"bench{i}"
                host = {"Host": f"{name}.localhost:{port}"}
                started = time.perf_counter()
                api.post("/api/instances", json={"name": name}).raise_for_status()
                wait_ok(api, "/api/health", host, 60)
                to_first_200.append(time.perf_counter() - started)

            print(f"create -> first 200 through the proxy, {args.instances} instances:")
            print(
                f"  min {min(to_first_200):.3f} s  median {statistics.median(to_first_200):.3f} s"
                f"  max {max(to_first_200):.3f} s"
            )
        instance_port = _instance_port(root / "data", "bench0")
        _public_file(root / "data", "bench0", "1mb.bin", 1_048_576)
        caddy = f"http://127.0.0.1:{caddy_port}"
        for label, path in (
            ("small JSON (GET /api/health)", "/api/health"),
            ("1 MB file", "/1mb.bin"),
        ):
            if use_caddy:
                with httpx.Client(timeout=60, trust_env=False) as probe:
                    wait_ok(probe, f"{caddy}{path}", {"Host": "bench0.localhost"}, 30)
            result = measure(
                f"http://127.0.0.1:{instance_port}{path}",
                f"{base}{path}",
                f"bench0.localhost:{port}",
                concurrency=args.concurrency,
                duration_s=args.duration,
            )
            print(f"\n{label}: embedded proxy")
            print(format_table(result))
            if use_caddy:
                through = run_load(
                    f"{caddy}{path}",
                    f"bench0.localhost:{caddy_port}",
                    concurrency=args.concurrency,
                    duration_s=args.duration,
                    tool=result["tool"],
                )
                direct, embedded = result["direct"], result["proxied"]
                print(f"{label}: Caddy (same direct baseline)")
                print(
                    f"  caddy: {through.rps:.0f} req/s, p50 {through.p50_ms:.3f} ms, "
                    f"p99 {through.p99_ms:.3f} ms, {through.errors} errors\n"
                    f"  caddy/direct: rps {through.rps / direct['rps']:.2f}, "
                    f"p50 {through.p50_ms / direct['p50_ms']:.2f}, "
                    f"p99 {through.p99_ms / direct['p99_ms']:.2f}\n"
                    f"  caddy/embedded: rps {through.rps / embedded['rps']:.2f}, "
                    f"p50 {through.p50_ms / embedded['p50_ms']:.2f}, "
                    f"p99 {through.p99_ms / embedded['p99_ms']:.2f}"
                )
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        subprocess.run(
            [str(BIN / "pocketfleet"), "down"], env=env, check=False, capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def _public_file(data_dir: Path, name: str, filename: str, size: int) -> None:
    """Put a `size`-byte file in the instance's pb_public (served by PocketBase at /)."""
    import sqlite3

    with sqlite3.connect(data_dir / "control.db") as db:
        (instance_id,) = db.execute("select id from instance where name = ?", (name,)).fetchone()
    public = data_dir / "instances" / instance_id / "pb_public"
    target = public / filename
    target.write_bytes(os.urandom(size))
    owner = public.stat()
    os.chown(target, owner.st_uid, owner.st_gid)


def _instance_port(data_dir: Path, name: str) -> int:
    """The instance's port, from the control DB (the API shows it to operators only)."""
    import sqlite3

    with sqlite3.connect(data_dir / "control.db") as db:
        row = db.execute("select port from instance where name = ?", (name,)).fetchone()
    return int(row[0])


if __name__ == "__main__":
    main()
