"""Our runtime (`pocketfleet` engine) against the real PocketBase, same machine, same data.

    .venv/bin/python bench/runtime.py [--records 10000] [--concurrency 16] [--seconds 5]

Both servers start on fresh data folders with the same collection (`items`: title, n, tag,
public rules) and the same N records (created through each server's batch API). Then, one
server at a time, `wrk` drives each workload at a fixed concurrency: view by id, a filtered
list (with and without `skipTotal`), create, and the two auth calls (`auth-with-password` of a
user of the default `users` collection, bcrypt-bound on both; `auth-refresh` of its token). It
prints requests/s, p50/p99 latency, the
idle and loaded memory (PSS) of each server, and the ratio ours/PocketBase on every line.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EMAIL, PASSWORD = "bench@example.com", "bench-pass-12345"
FILTER = "n >= 2000 && n < 6000 && tag = 'b'"
COLLECTION = {
    "name": "items",
    "listRule": "",
    "viewRule": "",
    "createRule": "",
    "fields": [
        {"name": "title", "type": "text"},
        {"name": "n", "type": "number"},
        {"name": "tag", "type": "select", "values": ["a", "b", "c"], "maxSelect": 1},
    ],
    "indexes": ["CREATE INDEX idx_items_n ON items (n)"],
}


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    root: Path

    def pss_mb(self) -> float:
        total = 0
        proc = psutil.Process(self.process.pid)
        for p in [proc, *proc.children(recursive=True)]:
            total += p.memory_full_info().pss
        return total / (1 << 20)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(name: str) -> Server:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    data = root / "pb_data"
    port = free_port()
    if name == "pocketbase":
        upsert = [
            str(BIN / "pocketbase"),
            "superuser",
            "upsert",
            EMAIL,
            PASSWORD,
            "--dir",
            str(data),
        ]
        serve = [
            str(BIN / "pocketbase"),
            "serve",
            "--http",
            f"127.0.0.1:{port}",
            "--dir",
            str(data),
        ]
        for sub in ("migrations", "hooks", "public"):
            serve += [f"--{sub}Dir", str(root / f"pb_{sub}")]
    else:
        base = [sys.executable, "-m", "instance_runtime"]
        upsert = [*base, "superuser", "upsert", EMAIL, PASSWORD, "--dir", str(data)]
        serve = [*base, "serve", "--dir", str(data), "--http", f"127.0.0.1:{port}"]
    subprocess.run(upsert, check=True, capture_output=True, cwd=ROOT)
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(serve, stdout=log, stderr=log, start_new_session=True, cwd=ROOT)
    server = Server(name, process, f"http://127.0.0.1:{port}", root)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{server.url}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{name} did not start; see {root / 'server.log'}")
        time.sleep(0.1)


USER_EMAIL, USER_PASSWORD = "bench-user@example.com", "bench-user-pass-1"


@dataclass
class Seeded:
    record_id: str  # one of the records
    user_token: str  # an auth token of the user


def seed(server: Server, records: int) -> Seeded:
    """Create the collection, `records` records and one user."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        token = client.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        ).json()["token"]
        client.headers["Authorization"] = token
        client.post("/api/collections", json=COLLECTION).raise_for_status()
        client.patch("/api/settings", json={"batch": {"enabled": True, "maxRequests": 200}})
        for start_at in range(0, records, 200):
            batch = [
                {
                    "method": "POST",
                    "url": "/api/collections/items/records",
                    "body": {"title": f"item {i}", "n": i, "tag": "abc"[i % 3]},
                }
                for i in range(start_at, min(start_at + 200, records))
            ]
            client.post("/api/batch", json={"requests": batch}).raise_for_status()
        middle = max(records // 2, 1)
        first = client.get("/api/collections/items/records", params={"perPage": 1, "page": middle})
        one: str = first.json()["items"][0]["id"]
        user = {"email": USER_EMAIL, "password": USER_PASSWORD, "passwordConfirm": USER_PASSWORD}
        client.post("/api/collections/users/records", json=user).raise_for_status()
        login = client.post(
            "/api/collections/users/auth-with-password",
            json={"identity": USER_EMAIL, "password": USER_PASSWORD},
        )
        login.raise_for_status()
        return Seeded(one, str(login.json()["token"]))


def wrk(url: str, concurrency: int, seconds: int, script: Path | None = None) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            raise RuntimeError(f"no {label}% latency in wrk output:\n{out}")
        value = float(match.group(1))
        return (
            value / 1000
            if match.group(2) == "us"
            else value * 1000
            if match.group(2) == "s"
            else value
        )

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p50": ms("50"),
        "p99": ms("99"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def run(records: int, concurrency: int, seconds: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is required (Debian package `wrk`)")
    scripts = Path(tempfile.mkdtemp())

    def post(name: str, body: str, headers: dict[str, str] | None = None) -> Path:
        lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items()]
        lines.append(f"wrk.body = '{body}'")
        path = scripts / f"{name}.lua"
        path.write_text("\n".join(lines) + "\n")
        return path

    create = post("create", '{"title": "new", "n": 42, "tag": "a"}')
    login = post("login", f'{{"identity": "{USER_EMAIL}", "password": "{USER_PASSWORD}"}}')
    results: dict[str, dict[str, dict[str, float]]] = {}
    memory: dict[str, tuple[float, float]] = {}
    for name in ("pocketbase", "pocketfleet"):
        server = start(name)
        try:
            seeded = seed(server, records)
            rid = seeded.record_id
            refresh = post(f"refresh-{name}", "", {"Authorization": seeded.user_token})
            time.sleep(1)
            idle = server.pss_mb()
            base = f"{server.url}/api/collections/items/records"
            users = f"{server.url}/api/collections/users"
            filtered = f"{base}?perPage=30&sort=-n&filter={quote(FILTER)}"
            loads = {
                "view by id": (f"{base}/{rid}", None),
                "list filtered": (filtered, None),
                "list filtered skipTotal": (filtered + "&skipTotal=1", None),
                "create": (base, create),
                "auth-with-password": (f"{users}/auth-with-password", login),
                "auth-refresh": (f"{users}/auth-refresh", refresh),
            }
            results[name] = {}
            for label, (url, lua) in loads.items():
                wrk(url, concurrency, 1, lua)  # warm-up
                results[name][label] = wrk(url, concurrency, seconds, lua)
            memory[name] = (idle, server.pss_mb())
        finally:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)
    print(
        f"records={records} concurrency={concurrency} seconds={seconds} (wrk, one server at a time)"
    )
    print(
        f"{'workload':26} {'PB rps':>9} {'ours rps':>9} {'ratio':>6}   "
        f"{'PB p50/p99 ms':>15} {'ours p50/p99 ms':>17}"
    )
    for label in results["pocketbase"]:
        pb, us = results["pocketbase"][label], results["pocketfleet"][label]
        ratio = us["rps"] / pb["rps"] if pb["rps"] else float("nan")
        print(
            f"{label:26} {pb['rps']:9.0f} {us['rps']:9.0f} {ratio:6.2f}   "
            f"{pb['p50']:7.2f}/{pb['p99']:<7.2f} {us['p50']:8.2f}/{us['p99']:<8.2f}"
            + (
                f"  errors pb={pb['errors']:.0f} ours={us['errors']:.0f}"
                if pb["errors"] or us["errors"]
                else ""
            )
        )
    for i, label in enumerate(("idle PSS MB", "loaded PSS MB")):
        pb_mb, us_mb = memory["pocketbase"][i], memory["pocketfleet"][i]
        print(f"{label:26} {pb_mb:9.1f} {us_mb:9.1f} {us_mb / pb_mb:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    run(args.records, args.concurrency, args.seconds)


if __name__ == "__main__":
    main()
