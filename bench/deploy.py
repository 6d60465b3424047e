"""Benchmark: `pocketfleet deploy` of a site's code folders against `scp -r` of them (issue 14).

    .venv/bin/python bench/deploy.py [--files 1000] [--mb 50] [--repeat 3] [--text]
                                     [--first-repeat 3] [--no-running]

Starts `pocketfleet serve` with its SFTP server on loopback, signs up, makes an API token and
an ed25519 key, writes a site whose `pb_public/` holds `--files` files in ten sub-folders,
`--mb` MB (10^6 bytes) in all (sizes spread around the mean; random, incompressible bytes, or
text that compresses with `--text`), and prints, in one run:

- a first upload of the folder to an instance that has none of it, by `pocketfleet deploy NAME
  SITE` (PF_URL, PF_TOKEN) and by `scp -r SITE/pb_public NAME@127.0.0.1:` (OpenSSH's scp, which
  speaks SFTP; the folder exists at the session's root and scp copies into it), each on a fresh
  instance (`--first-repeat` times, median);
- one file of the folder changed, then the same two commands again (`--repeat` times, another
  file each time, median): the deploy sends only what the instance lacks, scp sends it all;
- seconds (wall clock of the command, its start-up and the SSH handshake included) and bytes
  on the wire, both ways, counted by a TCP relay of this script between each client and the
  control plane's HTTP port or its SFTP port (TCP payload; headers of TCP/IP not counted); and
  the ratios deploy/scp.

The instances are stopped, so both sides measure the transfer alone and not the engine's
restart. Last (unless `--no-running`), the deploy side once more against a running instance,
which a deploy restarts on the new folders and awaits: labelled as such, no scp beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.ports import free_port  # noqa: E402
from tests.support.server import BIN, ServeProcess, scratch_dir, sign_up  # noqa: E402

EMAIL = "bench@example.com"
FOLDERS = 10
CHUNK = 1 << 16
WORDS = [
    "pocket", "fleet", "base", "record", "collection", "hook", "migration", "public", "index",
    "style", "script", "image", "font", "page", "view", "router", "auth", "user", "admin",
    "query", "filter", "sort", "expand", "field", "value",
]  # fmt: skip


class Relay:
    """A TCP relay on loopback, in a thread of its own, counting the bytes it passes each way
    between clients and `target_port` (the wire figures of both sides come from here)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.up = 0  # client -> server
        self.down = 0  # server -> client
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def counts(self) -> tuple[int, int]:
        return self.up, self.down

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            self._pipe(client_r, server_w, upward=True),
            self._pipe(server_r, client_w, upward=False),
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upward: bool
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                if upward:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@dataclass
class Run:
    """One command: seconds, bytes client -> server, bytes server -> client."""

    seconds: float
    up: int
    down: int


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.seconds for r in runs),
        int(statistics.median(r.up for r in runs)),
        int(statistics.median(r.down for r in runs)),
    )


def measured(relay: Relay, argv: list[str], env: dict[str, str]) -> Run:
    """Run `argv` to its end (it must succeed), timing it and counting what crossed `relay`."""
    up, down = relay.counts()
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed:\n{done.stdout}{done.stderr}")
    time.sleep(0.05)  # the relay's last reads after the client closed
    after_up, after_down = relay.counts()
    return Run(took, after_up - up, after_down - down)


def content(size: int, text: bool, rng: random.Random) -> bytes:
    if not text:
        return os.urandom(size)
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choices(WORDS, k=12)) + ".\n").encode()
    return bytes(out[:size])


def write_site(site: Path, files: int, total: int, text: bool) -> list[Path]:
    """`site/pb_public` with `files` files in `FOLDERS` sub-folders, `total` bytes in all (each
    between half and one and a half of the mean); the files, in order."""
    rng = random.Random(14)
    weights = [rng.uniform(0.5, 1.5) for _ in range(files)]
    sizes = [int(total * w / sum(weights)) for w in weights]
    sizes[-1] += total - sum(sizes)
    paths: list[Path] = []
    for i, size in enumerate(sizes):
        path = site / "pb_public" / f"assets{i % FOLDERS}" / f"file{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(size, text, rng))
        paths.append(path)
    return paths


def change_one(path: Path, text: bool) -> None:
    """New content for `path`, of the same size."""
    path.write_bytes(content(path.stat().st_size, text, random.Random(time.time_ns())))


def count_files(folder: Path) -> tuple[int, int]:
    """Files below `folder` and their bytes (what an instance got, as a check)."""
    found = [p for p in folder.rglob("*") if p.is_file()]
    return len(found), sum(p.stat().st_size for p in found)


def ssh_options(key: Path) -> list[str]:
    return [
        "-F", "/dev/null", "-i", str(key),
        "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", "PasswordAuthentication=no", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
    ]  # fmt: skip


def size_text(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} MB"
    if value >= 1e3:
        return f"{value / 1e3:.1f} kB"
    return f"{value:.0f} B"


def side_text(run: Run) -> str:
    return f"{run.seconds:6.2f} s, {size_text(run.up):>9} sent ({size_text(run.down)} back)"


def ratio(a: float, b: float) -> str:
    return f"{a / b:#.3g}" if b else "n/a"


def figures(label: str, deploy: Run, scp: Run) -> str:
    return (
        f"{label}:\n  deploy {side_text(deploy)}\n  scp -r {side_text(scp)}\n"
        f"  deploy/scp: time {ratio(deploy.seconds, scp.seconds)}, "
        f"bytes sent {ratio(deploy.up, scp.up)}"
    )


@contextmanager
def fleet(sftp_port: int, mb: int) -> Iterator[ServeProcess]:
    root = scratch_dir("pf-bench-deploy-")
    env = {
        "PF_SFTP": f"127.0.0.1:{sftp_port}",
        "PF_DEFAULT_QUOTA": "100",
        "PF_DEPLOY_MAX_MB": str(max(200, 2 * mb)),
        "PF_INSTANCE_DISK_LIMIT_MB": str(max(1024, 4 * mb)),
        "PF_FILES_MAX_FILE_MB": str(max(50, mb)),
        "PF_IDLE_TIMEOUT_S": "0",
    }
    serve = ServeProcess(root / "data", env=env)
    try:
        serve.start()
        yield serve
    except BaseException:
        print("--- the end of serve's log:\n" + serve.output())
        raise
    finally:
        serve.down()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--mb", type=int, default=50, help="MB (10^6 bytes) in all")
    parser.add_argument("--repeat", type=int, default=3, help="one-file changes, median")
    parser.add_argument(
        "--first-repeat", type=int, default=3, help="first uploads, each on a fresh instance"
    )
    parser.add_argument("--text", action="store_true", help="compressible text, not random")
    parser.add_argument(
        "--running", action=argparse.BooleanOptionalAction, default=True,
        help="also deploy to a running instance (restart included)",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("scp") is None or shutil.which("ssh-keygen") is None:
        sys.exit("needs OpenSSH's scp and ssh-keygen (Debian: openssh-client)")

    sftp_port = free_port()
    with fleet(sftp_port, args.mb) as serve:
        api = serve.client()
        api.timeout = httpx.Timeout(900)
        api.headers["Authorization"] = f"Bearer {sign_up(api, EMAIL)}"
        made = api.post("/api/tokens", json={"name": "bench"})
        if made.status_code != 201:
            raise RuntimeError(f"token: {made.status_code} {made.text}")
        work = scratch_dir("pf-bench-deploy-site-")
        key = work / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(key)],
            check=True,
        )
        added = api.post("/api/ssh-keys", json={"public_key": key.with_suffix(".pub").read_text()})
        if added.status_code != 201:
            raise RuntimeError(f"ssh key: {added.status_code} {added.text}")

        http_relay, sftp_relay = Relay(serve.port), Relay(sftp_port)
        http_relay.start()
        sftp_relay.start()
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("PF_")}
        cli_env.update(PF_URL=f"http://127.0.0.1:{http_relay.port}", PF_TOKEN=made.json()["token"])
        site = work / "site"
        kind = "compressible text" if args.text else "random, incompressible"
        print(f"writing {args.files} files, {args.mb} MB ({kind})...", flush=True)
        paths = write_site(site, args.files, args.mb * 1_000_000, args.text)
        names = iter(f"bench{i}" for i in range(1000))

        def instance(*, running: bool = False) -> tuple[str, Path]:
            name = next(names)
            created = api.post("/api/instances", json={"name": name})
            if created.status_code != 201:
                raise RuntimeError(f"{name}: {created.status_code} {created.text}")
            wanted = "running" if running else "stopped"
            row = api.post(f"/api/instances/{name}/{'start' if running else 'stop'}").json()
            if row["status"] != wanted:
                raise RuntimeError(f"{name} is not {wanted}: {row}")
            return name, serve.data_dir / "instances" / created.json()["id"] / "pb_public"

        def deploy(name: str, *, relayed: bool = True) -> Run:
            env = cli_env if relayed else {**cli_env, "PF_URL": serve.url}
            argv = [str(BIN / "pocketfleet"), "deploy", name, str(site)]
            return measured(http_relay, argv, env)

        def scp(name: str, *, relayed: bool = True) -> Run:
            port = sftp_relay.port if relayed else sftp_port
            argv = ["scp", "-q", "-r", "-P", str(port), *ssh_options(key)]
            argv += [str(site / "pb_public"), f"{name}@127.0.0.1:"]
            return measured(sftp_relay, argv, dict(os.environ))

        def checked(run: Run, public: Path, what: str) -> Run:
            """`run`, once the instance's pb_public holds the site's files."""
            got = count_files(public)
            want = count_files(site / "pb_public")
            if got != want:
                raise RuntimeError(f"{what}: the instance has {got} (files, bytes), not {want}")
            return run

        sides: dict[str, Callable[..., Run]] = {"deploy": deploy, "scp": scp}
        first: dict[str, list[Run]] = {"deploy": [], "scp": []}
        kept: dict[str, tuple[str, Path]] = {}
        for _ in range(args.first_repeat):
            for side, command in sides.items():
                name, public = instance()
                first[side].append(checked(command(name), public, f"first {side}"))
                kept[side] = (name, public)
                print(f"  first upload, {side}: {side_text(first[side][-1])}", flush=True)

        changed: dict[str, list[Run]] = {"deploy": [], "scp": []}
        for i in range(args.repeat):
            change_one(paths[(i * 7919) % len(paths)], args.text)
            for side, command in sides.items():
                name, public = kept[side]
                changed[side].append(checked(command(name), public, f"{side} of one change"))
                print(f"  one file changed, {side}: {side_text(changed[side][-1])}", flush=True)

        unchanged = deploy(kept["deploy"][0])  # hashing, the plan, "nothing changed"
        change_one(paths[-1], args.text)
        direct = {  # one more change without the relay: what the relay costs in time
            side: checked(command(kept[side][0], relayed=False), kept[side][1], f"direct {side}")
            for side, command in sides.items()
        }

        running: tuple[Run, Run] | None = None
        if args.running:
            name, public = instance(running=True)
            up_first = checked(deploy(name), public, "deploy to a running instance")
            change_one(paths[0], args.text)
            up_change = checked(deploy(name), public, "one change to a running instance")
            if api.get(f"/api/instances/{name}").json()["status"] != "running":
                raise RuntimeError(f"{name} is not running after its deploys")
            running = (up_first, up_change)
        http_relay.close()
        sftp_relay.close()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"pb_public: {args.files} files in {FOLDERS} folders, {args.mb} MB ({kind}); "
        f"stopped instances; bytes = TCP payload through the relay"
    )
    print(
        figures(
            f"first upload (median of {args.first_repeat}, a fresh instance each)",
            median_run(first["deploy"]),
            median_run(first["scp"]),
        )
    )
    print(
        figures(
            f"one file changed (median of {args.repeat})",
            median_run(changed["deploy"]),
            median_run(changed["scp"]),
        )
    )
    print(f"deploy with nothing changed (hash, plan, nothing sent): {side_text(unchanged)}")
    print(
        f"one more file changed, without the relay (timing check): deploy "
        f"{direct['deploy'].seconds:.2f} s, scp -r {direct['scp'].seconds:.2f} s"
    )
    if running is not None:
        print("deploy to a RUNNING instance (restarted on the new folders and awaited; no scp):")
        print(f"  first upload      {side_text(running[0])}")
        print(f"  one file changed  {side_text(running[1])}")


if __name__ == "__main__":
    main()
