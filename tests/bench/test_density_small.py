"""`bench/density.py` on a small fleet, as a test of correctness, never of timing.

The bench runs as it does by hand (its own `pocketfleet serve`, as root: instances in their
sandboxes under uids of their own), on this worker's uids and ports, with a faster reconcile
interval so that every instance gets its full visit after the restart within the idle window.
It must show: every create answered 201 and every instance runs (and the hibernated ones
sleep); `serve` restarted over the fleet re-adopted every instance with the very process it
had (same pid, same start time); `pocketfleet down` succeeded and left no process of the run
(engines, their sandboxes, Litestream, serve) behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNING = 40
ASLEEP = 10


@pytest.mark.timeout(1200)
def test_a_small_dense_fleet_is_created_readopted_and_brought_down(tmp_path: Path) -> None:
    facts_path = tmp_path / "facts.json"
    argv = [sys.executable, str(ROOT / "bench" / "density.py")]
    argv += ["--instances", str(RUNNING), "--asleep", str(ASLEEP), "--concurrency", "4"]
    argv += ["--wakes", "3", "--requests", "10", "--idle-seconds", "8", "--settle-seconds", "0"]
    argv += ["--env", "PF_RECONCILE_INTERVAL_S=0.5", "--json", str(facts_path)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1100)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    facts = json.loads(facts_path.read_text())

    assert facts["statuses"] == [201] * (RUNNING + ASLEEP), facts["failures"]
    assert facts["failures"] == []
    assert facts["not_running"] == []
    assert facts["not_asleep"] == []
    assert facts["restarted_by_readoption"] == []
    assert facts["down_code"] == 0
    assert facts["engines_left"] == []
    assert facts["platform_left"] == []
    assert facts["naming_left"] == []
