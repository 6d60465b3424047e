"""Run the official PocketBase JS SDK (tests/js/sdk_client.mjs) against a server.

    run_sdk("health", "http://demo.localhost:8090")
    run_sdk("superuser-crud", url, "admin@example.com", "secret-password")

The script resolves ``localhost`` and ``*.localhost`` to 127.0.0.1 itself. Use ``arun_sdk`` from
async tests whose server runs on the test's own event loop, so the loop is not blocked.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SDK_CLIENT = JS_DIR / "sdk_client.mjs"


def sdk_command(scenario: str, url: str, *args: str) -> list[str]:
    """The command line that runs ``scenario`` against ``url`` with ``args``."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules").is_dir():
        raise AssertionError("node or tests/js/node_modules missing: run scripts/install-system.sh")
    return [node, str(SDK_CLIENT), scenario, url, json.dumps(list(args))]


def run_sdk(scenario: str, url: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run one SDK scenario and return its JSON result; AssertionError (with stderr) on failure."""
    command = sdk_command(scenario, url, *args)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"sdk {scenario} timed out after {timeout}s: {err.stderr!r}") from err
    return _parse(scenario, result.returncode, result.stdout, result.stderr)


async def arun_sdk(scenario: str, url: str, *args: str) -> dict[str, Any]:
    """Like ``run_sdk`` without blocking the event loop; bound it with ``asyncio.timeout``."""
    process = await asyncio.create_subprocess_exec(
        *sdk_command(scenario, url, *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await process.communicate()
    except BaseException:  # cancelled, e.g. by the caller's asyncio.timeout
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return _parse(scenario, process.returncode, stdout.decode(), stderr.decode())


def _parse(scenario: str, returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    if returncode != 0:
        raise AssertionError(f"sdk {scenario} failed ({returncode}): {stderr.strip()}")
    try:
        value = json.loads(stdout)
    except json.JSONDecodeError as err:
        raise AssertionError(f"sdk {scenario} printed no JSON: {stdout!r} {stderr!r}") from err
    if not isinstance(value, dict):
        raise AssertionError(f"sdk {scenario} printed {value!r}, not a JSON object")
    return value
