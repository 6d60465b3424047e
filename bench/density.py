"""Benchmark: a dense fleet on one machine — what pocketfleet itself costs per instance.

    .venv/bin/python bench/density.py [--instances 1000] [--asleep 1000] [--concurrency 4]
        [--wakes 30] [--requests 300] [--idle-seconds 60] [--settle-seconds 120]
        [--py-spy SECONDS] [--json PATH] [--env PF_SETTING=VALUE ...]

Runs `pocketfleet serve` as `bench/wake.py` does (a scratch folder, as root so instances run as
their own uids in their sandboxes, default settings but `PF_IDLE_TIMEOUT_S=0`, so that the
running fleet stays up for the length of the run) and, through its real API only:

1. creates 10 `pocketbase` instances (`POST /api/instances`, then `POST .../start`, which
   answers once the instance runs), and on that fleet of 10 measures the baseline: wakes
   (an instance hibernated through the API, then the first request through the proxy, a
   `GET /api/health`, timed until it answers) and requests through the proxy to a running
   instance;
2. creates `--asleep` instances, each started once and hibernated through the API, then the
   remaining `--instances` - 10 running ones, `--concurrency` creators at a time; every
   create's status is kept (all must be 201) and every instance must run;
3. restarts `serve` (SIGTERM, start again) over the fleet: every running instance must be
   re-adopted with the pid (and process start time) it had, none restarted (checked after the
   idle window of step 4, by when each instance had its full visit by the reconciler);
4. waits until the control plane is calm (`--settle-seconds` at most), then over
   `--idle-seconds` measures idle CPU from /proc of the processes this run started only: the
   control plane, Litestream, Caddy when `serve` runs it, and the engines (each instance's
   process and the bwrap holding its sandbox) together; memory (PSS, smaps_rollup) of the
   platform's processes divided by the running instances; with `--py-spy S`, S seconds of
   py-spy samples of the control plane and its top frames;
5. the same wakes and proxied requests on the full fleet, and their ratios to step 1;
6. `pocketfleet down`, timed (and when `serve` was gone within it), and whether any engine
   process (or anything else of this run) is left; the bench then kills what was left.

Other work on the machine skews every figure: quote the ratios of one run, and run it on a quiet
machine for the full-size figures. `--env PF_X=V` passes a setting to `serve` (the test gives
it a faster reconcile interval); settings a test runner gives its workers are kept.

Every figure is printed as it is measured and again in the closing summary; `--json PATH`
also writes the facts (statuses, pids, leftovers) for `tests/bench/test_density_small.py`,
which runs a small fleet as a test of correctness, never of timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE))  # after the repository: bench/proxy.py must not shadow `proxy`

from wake import (  # noqa: E402  (bench/wake.py: the same `serve` as every bench here)
    BIN,
    PASSWORD,
    Serve,
    memory_of,
    percentile,
    settle,
)

BASELINE = 10
PROJECT_FRAME = "(control_plane/"  # how py-spy names a frame of the control plane's code
HEALTH = "/api/health"
# settings a test runner gives each of its workers (tests/support/workers.py): kept
PASSED_THROUGH = ("PF_INSTANCE_UID_BASE", "PF_INSTANCE_PORT_RANGE")


class Fleet(Serve):
    """`pocketfleet serve` with the bench's account, creating and measuring instances."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        super().__init__(root, {"PF_IDLE_TIMEOUT_S": "0", **env})
        self.env.update({k: os.environ[k] for k in PASSED_THROUGH if k in os.environ})
        self.statuses: list[int] = []
        self.failures: list[str] = []

    def fleet_rows(self) -> list[dict[str, Any]]:
        rows = self.api.get("/api/fleet")
        rows.raise_for_status()
        return list(rows.json())

    def make(self, name: str, asleep: bool) -> float:
        """Create `name` and wait until it runs (then hibernate it if `asleep`): the seconds
        the create and its start took. Failures are kept, not raised."""
        with httpx.Client(base_url=self.api.base_url, headers=self.api.headers, timeout=120) as c:
            started = time.perf_counter()
            body = {"name": name, "engine": "pocketbase", "superuser_password": PASSWORD}
            created = c.post("/api/instances", json=body)
            self.statuses.append(created.status_code)
            if created.status_code != 201:
                self.failures.append(f"{name}: create {created.status_code} {created.text[:200]}")
                return time.perf_counter() - started
            row = c.post(f"/api/instances/{name}/start")
            took = time.perf_counter() - started
            if row.status_code != 200 or row.json().get("status") != "running":
                self.failures.append(f"{name}: start {row.status_code} {row.text[:300]}")
            elif asleep:
                slept = c.post(f"/api/instances/{name}/hibernate")
                if slept.status_code != 200 or slept.json().get("status") != "hibernated":
                    self.failures.append(
                        f"{name}: hibernate {slept.status_code} {slept.text[:200]}"
                    )
            return took

    def make_many(self, names: list[str], concurrency: int, asleep: bool = False) -> list[float]:
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            return list(pool.map(lambda name: self.make(name, asleep), names))

    def wakes(self, names: list[str], count: int) -> list[float]:
        """`count` wakes, cycling over `names`: hibernate, then the first request, timed."""
        results: list[float] = []
        for k in range(count):
            name = names[k % len(names)]
            slept = self.api.post(f"/api/instances/{name}/hibernate").json()
            if slept.get("status") != "hibernated":
                raise RuntimeError(f"{name} did not hibernate: {slept}")
            with self.instance(name) as client:
                started = time.perf_counter()
                answer = client.get(HEALTH)
                results.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200:
                why = self.api.get(f"/api/instances/{name}").json().get("status_reason")
                raise RuntimeError(
                    f"wake of {name}: {answer.status_code} {answer.text[:200]}: {why}"
                )
        return results

    def proxied(self, names: list[str], count: int) -> list[float]:
        """`count` requests through the proxy to running instances (`names` in turn)."""
        clients = [self.instance(name) for name in names]
        results: list[float] = []
        try:
            for client in clients:
                client.get(HEALTH)  # a connection to each, opened before the clock runs
            for k in range(count):
                started = time.perf_counter()
                answer = clients[k % len(clients)].get(HEALTH)
                results.append((time.perf_counter() - started) * 1000)
                answer.raise_for_status()
        finally:
            for client in clients:
                client.close()
        return results


# -- processes this run started -------------------------------------------------------------


def process_key(pid: int) -> tuple[int, float] | None:
    """(pid, start time): a process told apart from a later one with the same pid."""
    try:
        return pid, psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def sandbox_holder(pid: int) -> int | None:
    """The bwrap outside the sandbox of engine `pid`, when there is one."""
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(pid).parent()
        if parent is not None and parent.name() == "bwrap":
            return parent.pid
    return None


def litestream_of(data_dir: Path) -> list[int]:
    """The running Litestream processes of the data folder (one per replication shard)."""
    top = data_dir / "litestream"
    found: list[int] = []
    for record in [top / "litestream.pid", *sorted(top.glob("shard-*/litestream.pid"))]:
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(record.read_text())["pid"])
            if psutil.pid_exists(pid):
                found.append(pid)
    return found


def caddy_of(serve_pid: int) -> int | None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(serve_pid).children(recursive=True):
            if child.name() == "caddy":
                return child.pid
    return None


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def idle_cpu(groups: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """CPU of each group of processes over the same `seconds`, in percent of one core."""
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    time.sleep(seconds)
    return {
        name: 100 * (cpu_seconds(pids) - before[name]) / seconds for name, pids in groups.items()
    }


def pss(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, KeyError, ValueError):
            total += memory_of(pid)[1]
    return total


def py_spy_top(pid: int, seconds: float, out: Path, top: int = 12) -> list[str]:
    """`seconds` of py-spy samples of `pid` (non-blocking, idle threads left out) and the
    frames most often on CPU: by own time and including callees."""
    spy = BIN / "py-spy"
    if not spy.exists():
        return ["py-spy is not installed (pip install py-spy)"]
    command = [str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += ["--rate", "100", "--nonblocking", "--format", "raw", "--output", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out.exists():
        return [f"py-spy failed: {done.stderr.strip()[-300:]}"]
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        if not frames:
            continue
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            if PROJECT_FRAME in frame:  # pocketfleet's own code, whatever it called
                inclusive[frame] += n
    if samples == 0:
        return ["no samples: the control plane never ran Python code in the window"]
    share = 100 / (seconds * 100)  # percent of one core per sample at 100 Hz
    lines = [f"{samples} samples = {samples * share:.1f} % of a core on CPU; own time:"]
    lines += [f"  {n * share:5.2f} %  {frame}" for frame, n in own.most_common(top)]
    lines.append("pocketfleet's frames, including callees:")
    lines += [f"  {n * share:5.2f} %  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


def leftovers(keys: Iterable[tuple[int, float]]) -> list[str]:
    """Which of the processes `keys` still run (the same process: its start time too)."""
    left = []
    for pid, created in keys:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {process.name()}")
    return left


def naming(folder: Path) -> list[str]:
    """Processes whose command line names `folder` (this run's scratch folder)."""
    needle = str(folder)
    found = []
    for process in psutil.process_iter(["cmdline", "name"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if any(needle in part for part in process.info["cmdline"] or ()):
                found.append(f"{process.pid} {process.info['name']}")
    return found


# -- the run ----------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):6.1f} ms  p95 {percentile(values, 95):6.1f} ms  "
        f"(n={len(values)})"
    )


def mb(value: float) -> str:
    return f"{value / 1_048_576:.2f} MB"


def run(args: argparse.Namespace, root: Path, note: Callable[[str, str], None]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    serve = Fleet(root, dict(item.split("=", 1) for item in args.env))
    data = root / "data"
    engine_keys: list[tuple[int, float]] = []
    try:
        serve.start()
        serve.sign_in()
        base = [f"run{i:04d}" for i in range(min(BASELINE, args.instances))]
        started = time.perf_counter()
        first = serve.make_many(base, args.concurrency)
        first_wall = time.perf_counter() - started
        note(
            f"first {len(base)} creates (create + start until running)",
            ms([t * 1000 for t in first]),
        )
        base_wakes = serve.wakes(base, args.wakes)
        base_proxy = serve.proxied(base, args.requests)
        note(f"wake on a fleet of {len(base)} (hibernated -> first response)", ms(base_wakes))
        note(f"request through the proxy on a fleet of {len(base)}", ms(base_proxy))

        asleep = [f"nap{i:04d}" for i in range(args.asleep)]
        started = time.perf_counter()
        serve.make_many(asleep, args.concurrency, asleep=True)
        note(
            f"{args.asleep} instances created, started and hibernated",
            f"{time.perf_counter() - started:.1f} s",
        )
        rest = [f"run{i:04d}" for i in range(len(base), args.instances)]
        started = time.perf_counter()
        others = serve.make_many(rest, args.concurrency)
        rest_wall = time.perf_counter() - started
        names = base + rest
        every = first + others
        per_first = first_wall / max(1, len(base))
        per_all = (first_wall + rest_wall) / max(1, len(names))
        note("time per create, first 10 (wall / instances)", f"{per_first * 1000:.0f} ms")
        note(
            f"time per create, all {len(names)}",
            f"{per_all * 1000:.0f} ms ({per_all / per_first:.2f}x the first 10)",
        )
        tail = every[-max(1, len(every) // 10) :]
        note("create + start, the last tenth", ms([t * 1000 for t in tail]))
        statuses = Counter(serve.statuses)
        note("create statuses", ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items())))
        facts["statuses"] = serve.statuses
        facts["failures"] = serve.failures[:50]
        for failure in serve.failures[:10]:
            note("failure", failure)

        rows = {row["name"]: row for row in serve.fleet_rows()}
        running = {n: rows[n]["pid"] for n in names if n in rows and rows[n]["status"] == "running"}
        sleeping = [n for n in asleep if n in rows and rows[n]["status"] == "hibernated"]
        facts["not_running"] = sorted(set(names) - set(running))
        facts["not_asleep"] = sorted(set(asleep) - set(sleeping))
        note(
            "running",
            f"{len(running)} of {len(names)}; hibernated {len(sleeping)} of {len(asleep)}",
        )

        # 3. serve restarted over the fleet re-adopts every instance
        before = {name: process_key(pid) for name, pid in running.items() if pid}
        started = time.perf_counter()
        serve.stop()
        stop_took = time.perf_counter() - started
        started = time.perf_counter()
        serve.start()
        deadline = time.monotonic() + 300
        while True:
            rows = {row["name"]: row for row in serve.fleet_rows()}
            after = {
                n: rows[n]["pid"] for n in before if rows.get(n, {}).get("status") == "running"
            }
            if len(after) == len(before) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        readopt_took = time.perf_counter() - started
        note("serve stopped (SIGTERM) in", f"{stop_took:.1f} s")
        note("serve started again, all running in", f"{readopt_took:.1f} s")

        # 4. idle CPU and memory
        pid = serve.process.pid if serve.process else 0
        started = time.perf_counter()
        settle(pid, below=3.0, longest=args.settle_seconds)
        took = time.perf_counter() - started
        note("control plane calm after", f"{took:.0f} s")
        engines = [p for p in after.values() if p]
        holders = [h for h in (sandbox_holder(p) for p in engines) if h is not None]
        engine_keys = [k for k in (process_key(p) for p in [*engines, *holders]) if k]
        litestream = litestream_of(data)
        caddy = caddy_of(pid)
        groups = {
            "control plane": [pid],
            "litestream": litestream,
            "caddy": [caddy] if caddy else [],
            "engines": engines,
            "sandboxes (bwrap)": holders,
        }
        cpu = idle_cpu(groups, args.idle_seconds)
        window = f"over {args.idle_seconds:g} s"
        for group, value in cpu.items():
            if groups[group]:
                note(f"idle CPU, {group} {window}", f"{value:.2f} % of a core")
            else:
                note(f"idle CPU, {group}", "not running")
        platform = cpu["control plane"] + cpu["litestream"] + cpu["caddy"]
        note(
            "idle CPU, platform (control plane + Litestream + Caddy)", f"{platform:.2f} % of a core"
        )
        facts["idle_cpu"] = cpu
        # by now every instance had its full visit (FULL_VISIT_EVERY passes since the restart)
        rows = {row["name"]: row for row in serve.fleet_rows()}
        changed = sorted(
            n
            for n, key in before.items()
            if rows.get(n, {}).get("status") != "running"
            or not rows[n]["pid"]
            or process_key(rows[n]["pid"]) != key
        )
        facts["restarted_by_readoption"] = changed
        note(
            "re-adopted after the restart with the same process",
            f"{len(before) - len(changed)} of {len(before)}"
            + (f" (changed: {', '.join(changed[:10])})" if changed else ""),
        )
        count = max(1, len(engines))
        platform_pids = [pid, *litestream, *([caddy] if caddy else [])]
        note(
            "platform memory per running instance (PSS of serve, Litestream, Caddy / N)",
            mb(pss(platform_pids) / count),
        )
        note("sandbox memory per running instance (PSS of its bwrap)", mb(pss(holders) / count))
        note("engine memory per running instance (PSS)", mb(pss(engines) / count))
        if args.py_spy:
            for line in py_spy_top(pid, args.py_spy, root / "py-spy.txt"):
                print("  " + line, flush=True)

        # 5. wakes and the proxy on the full fleet
        picks = names[len(base) :: max(1, len(rest) // max(1, args.wakes))][: args.wakes] or base
        fleet_wakes = serve.wakes(picks, args.wakes)
        fleet_proxy = serve.proxied(names[-BASELINE:], args.requests)
        note(f"wake on the fleet of {len(names)} + {len(asleep)} asleep", ms(fleet_wakes))
        note(f"request through the proxy on the fleet of {len(names)}", ms(fleet_proxy))
        for q in (50, 95):
            ratio = percentile(fleet_wakes, q) / percentile(base_wakes, q)
            note(f"wake p{q}, fleet / fleet of {len(base)}", f"{ratio:.2f}x")
        ratio = percentile(fleet_proxy, 50) / percentile(base_proxy, 50)
        note(f"proxy p50, fleet / fleet of {len(base)}", f"{ratio:.2f}x")
        # the woken ones run again: their new processes are ours too
        rows = {row["name"]: row for row in serve.fleet_rows()}
        engine_keys += [
            k for k in (process_key(rows[n]["pid"]) for n in picks if rows[n]["pid"]) if k
        ]
        engine_keys += [k for k in (process_key(h) for h in holders) if k]
    finally:
        serve_pid = serve.process.pid if serve.process else None
        platform_keys = [
            k
            for k in (
                process_key(p) for p in [*([serve_pid] if serve_pid else []), *litestream_of(data)]
            )
            if k
        ]
        child, serve.process = serve.process, None  # `pocketfleet down` stops it
        started = time.perf_counter()
        serve_gone: list[float] = []
        if child is not None:  # when serve is gone, within down (we collect it meanwhile)
            watcher = threading.Thread(
                target=lambda: (child.wait(), serve_gone.append(time.perf_counter() - started)),
                daemon=True,
            )
            watcher.start()
        down = subprocess.run(
            [str(BIN / "pocketfleet"), "down"], env=serve.env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        down_took = time.perf_counter() - started
        facts["down_seconds"] = down_took
        facts["down_code"] = down.returncode
        facts["engines_left"] = leftovers(engine_keys)
        facts["platform_left"] = leftovers(platform_keys)
        facts["naming_left"] = naming(root)
        gone = f"serve gone after {serve_gone[0]:.1f} s; " if serve_gone else ""
        note(
            "pocketfleet down",
            f"{down_took:.1f} s ({gone}exit {down.returncode}) {down.stdout.strip()[-200:]}",
        )
        left = facts["engines_left"] + facts["platform_left"] + facts["naming_left"]
        note("processes left after down", ", ".join(left[:20]) if left else "none")
        for pid, created in [*engine_keys, *platform_keys]:  # the bench cleans up after itself
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if process.create_time() == created:
                    process.kill()
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000, help="running instances")
    parser.add_argument("--asleep", type=int, default=1000, help="hibernated instances")
    parser.add_argument("--concurrency", type=int, default=4, help="creators at once")
    parser.add_argument("--wakes", type=int, default=30)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--settle-seconds", type=float, default=120.0)
    parser.add_argument("--py-spy", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--json", type=Path, default=None, help="write the facts here")
    parser.add_argument(
        "--env", action="append", default=[], metavar="PF_X=VALUE", help="a setting of serve"
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pf-bench-density-"))
    root.chmod(0o711)
    report: list[tuple[str, str]] = []

    def note(label: str, value: str) -> None:
        report.append((label, value))
        print(f"  {label}: {value}", flush=True)

    print(
        f"== {args.instances} running + {args.asleep} hibernated pocketbase instances", flush=True
    )
    try:
        facts = run(args, root, note)
    except BaseException:
        log = root / "serve.log"
        if log.exists():
            print("--- the end of serve.log:\n" + log.read_text(errors="replace")[-6000:])
        raise
    finally:
        if args.json is not None and (root / "serve.log").exists():
            shutil.copy(root / "serve.log", args.json.with_suffix(".serve.log"))
        shutil.rmtree(root, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(facts, indent=1))
    print("\n== summary")
    width = max(len(label) for label, _ in report)
    for label, value in report:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
