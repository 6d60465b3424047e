"""What keeps pytest-xdist's workers apart on one machine.

`make test` runs the suite on several workers at once (`-n`, see pyproject.toml). Servers and
drivers started by different workers share the machine's uids and loopback ports, so each
worker gets its own slice of both: instance uids (a hostile test's `kill -1` as an instance uid
must not reach another worker's instance with the same number) and the port range instance
ports are picked from (two control planes must not both pick a port that is free "now").
Every other port a test needs comes from the OS (`ports.free_port`), outside these ranges.
"""

from __future__ import annotations

import os

UID_BASE = 200000
UIDS_PER_WORKER = 20000
PORT_LOW = 20000
PORTS_PER_WORKER = 1250  # 8 workers fit in 20000-29999, the default range


def worker_number() -> int:
    """0 for the first xdist worker (`gw0`) and for a run without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = name.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


def isolation_env() -> dict[str, str]:
    """PF_* settings that give this worker's control planes and drivers their own slices."""
    number = worker_number()
    low = PORT_LOW + number * PORTS_PER_WORKER
    return {
        "PF_INSTANCE_UID_BASE": str(UID_BASE + number * UIDS_PER_WORKER),
        "PF_INSTANCE_PORT_RANGE": f"[{low}, {low + PORTS_PER_WORKER - 1}]",
    }
