"""The control plane's log holds no value of a variable (`control_plane.logs`, issue 13)."""

from __future__ import annotations

import subprocess
import sys

FAILING = """
import structlog
from control_plane.logs import configure_logging

configure_logging("info")
log = structlog.get_logger("reconcile")

def start(env={"API_KEY": "s3cret-env-value"}, password="s3cret-password"):
    raise ValueError("the engine refused to start")

try:
    start()
except ValueError:
    log.exception("reconciling an instance failed", instance="abc123")
log.debug("not at this level")
"""


def test_a_traceback_shows_code_never_local_values() -> None:
    ran = subprocess.run(
        [sys.executable, "-c", FAILING], capture_output=True, text=True, timeout=60, check=True
    )
    log = ran.stderr
    assert "ERROR reconcile: reconciling an instance failed instance=abc123" in log, log
    assert "ValueError: the engine refused to start" in log, log
    assert log.count("Traceback (most recent call last)") == 1, log
    assert "s3cret" not in log and "not at this level" not in log, log
