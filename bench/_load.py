"""Closed-loop HTTP load: N concurrent keep-alive clients hit one URL for a fixed time.

`measure(direct_url, proxied_url, host_header)` loads an instance directly, then through a
proxy, and returns both results with their ratios. The load generator is `wrk` when it is
installed (Debian package `wrk`), else an asyncio httpx generator run in a separate process
(this file, run as a script) so that it does not share an interpreter with what it measures.
Only 2xx/3xx responses count as successes; any other response or socket error is counted in
`errors`, and a run with errors is still reported (look at `errors` before the ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx

from proxy.transport import UpstreamTransport


@dataclass(frozen=True)
class LoadResult:
    tool: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


Tool = Literal["wrk", "httpx"]


def default_tool() -> Tool:
    """`wrk` if it is installed, else `httpx`."""
    return "wrk" if shutil.which("wrk") else "httpx"


def run_load(
    url: str,
    host_header: str | None = None,
    *,
    concurrency: int = 16,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    tool: Tool | None = None,
) -> LoadResult:
    """GET `url` (with `Host: host_header` if given) from `concurrency` clients for
    `duration_s` seconds, after `warmup_s` seconds of the same load whose figures are dropped.
    `tool` defaults to `default_tool()`."""
    load = _wrk if (tool or default_tool()) == "wrk" else _httpx_in_subprocess
    if warmup_s > 0:
        load(url, host_header, concurrency, warmup_s)
    return load(url, host_header, concurrency, duration_s)


def measure(
    direct_url: str,
    proxied_url: str,
    host_header: str,
    *,
    concurrency: int = 16,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    tool: Tool | None = None,
) -> dict[str, Any]:
    """Load `direct_url`, then `proxied_url` with `Host: host_header`; same load and load
    generator for both (`tool`, see `run_load`).

    Returns `{"tool", "concurrency", "direct": {...}, "proxied": {...}, "ratio": {"rps",
    "p50", "p99"}}` where the inner dicts are `LoadResult` fields and each ratio is
    proxied / direct (rps below 1 and latencies above 1 are the proxy's cost).
    """
    tool = tool or default_tool()
    direct, proxied = (
        run_load(
            url,
            host,
            concurrency=concurrency,
            duration_s=duration_s,
            warmup_s=warmup_s,
            tool=tool,
        )
        for url, host in ((direct_url, None), (proxied_url, host_header))
    )
    return {
        "tool": direct.tool,
        "concurrency": concurrency,
        "direct": asdict(direct),
        "proxied": asdict(proxied),
        "ratio": {
            "rps": proxied.rps / direct.rps,
            "p50": proxied.p50_ms / direct.p50_ms,
            "p99": proxied.p99_ms / direct.p99_ms,
        },
    }


def format_table(result: dict[str, Any]) -> str:
    """`measure()`'s result as a plain-text table."""
    rows = [("", "req/s", "p50 ms", "p99 ms", "requests", "errors")]
    for name in ("direct", "proxied"):
        r = result[name]
        rows.append(
            (
                name,
                f"{r['rps']:.0f}",
                f"{r['p50_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                str(r["requests"]),
                str(r["errors"]),
            )
        )
    ratio = result["ratio"]
    rows.append(
        (
            "proxy/direct",
            f"{ratio['rps']:.2f}",
            f"{ratio['p50']:.2f}",
            f"{ratio['p99']:.2f}",
            "",
            "",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    header = f"load: {result['tool']}, {result['concurrency']} concurrent clients"
    notes = [] if result["tool"] == "wrk" else [_HTTPX_NOTE]
    return "\n".join([header, *lines, *notes])


_HTTPX_NOTE = (
    "note: a Python load generator saturates before PocketBase does, so the direct figures\n"
    "are the generator's and the ratios understate the proxy's cost: install wrk."
)

# -- wrk ---------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk(url: str, host_header: str | None, concurrency: int, duration_s: float) -> LoadResult:
    whole_seconds = max(1, round(duration_s))  # wrk takes whole seconds
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{whole_seconds}s", "--latency", url]
    if host_header:
        command[1:1] = ["-H", f"Host: {host_header}"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def latency(percentile: str) -> float:
        match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no {percentile}% latency in wrk output:\n{out}")
        return float(match[1]) * _UNITS_MS[match[2]]

    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests = int(total[1])
    seconds = float(total[2]) * _UNITS_MS[total[3]] / 1000
    errors = sum(
        int(n)
        for line in out.splitlines()
        if "Socket errors" in line or "Non-2xx" in line
        for n in re.findall(r"\d+", line.partition(":")[2])
    )
    return LoadResult(
        tool="wrk",
        concurrency=concurrency,
        seconds=seconds,
        requests=requests,
        errors=errors,
        rps=requests / seconds,
        p50_ms=latency("50"),
        p99_ms=latency("99"),
    )


# -- httpx in a separate process ---------------------------------------------------------


def _httpx_in_subprocess(
    url: str, host_header: str | None, concurrency: int, duration_s: float
) -> LoadResult:
    command = [sys.executable, __file__, url, f"--concurrency={concurrency}"]
    command += [f"--duration={duration_s}"]
    if host_header:
        command.append(f"--host={host_header}")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return LoadResult(**json.loads(out))


async def _httpx_load(
    url: str, host_header: str | None, concurrency: int, duration_s: float
) -> LoadResult:
    headers = {"Host": host_header} if host_header else {}
    latencies: list[float] = []
    errors = 0
    # The proxy's own transport: httpx's default one (httpcore) is too slow to be a load
    # generator. Each worker waits for its response, so there are at most `concurrency`
    # connections.
    transport = UpstreamTransport(max_idle_per_origin=concurrency)
    async with httpx.AsyncClient(transport=transport, trust_env=False, headers=headers) as client:
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker() -> None:
            nonlocal errors
            while (sent := time.perf_counter()) < deadline:
                try:
                    response = await client.get(url)
                    ok = response.status_code < 400
                except httpx.TransportError:
                    ok = False
                latencies.append(time.perf_counter() - sent)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return LoadResult(
        tool="httpx (subprocess)",
        concurrency=concurrency,
        seconds=seconds,
        requests=len(latencies),
        errors=errors,
        rps=len(latencies) / seconds,
        p50_ms=cuts[49] * 1000,
        p99_ms=cuts[98] * 1000,
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop if it is installed (it is with `uvicorn[standard]`)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _main() -> None:
    parser = argparse.ArgumentParser(description="httpx load generator; prints a LoadResult")
    parser.add_argument("url")
    parser.add_argument("--host", default=None, help="Host header")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        result = runner.run(_httpx_load(args.url, args.host, args.concurrency, args.duration))
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    _main()
