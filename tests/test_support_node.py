"""Self-checks of tests/js/sdk_client.mjs and tests/support/node.py against the real PocketBase.

PocketBase listens on 127.0.0.1 only; the SDK reaches it as http://NAME.localhost:PORT, which
proves that the script's own lookup sends *.localhost to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import arun_sdk, run_sdk
from tests.support.ports import free_port, wait_for_port

EMAIL = "admin@example.com"
PASSWORD = "support-check-1"
POCKETBASE = Path(sys.prefix) / "bin" / "pocketbase"


@pytest.fixture(scope="module")
def pocketbase_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("pocketbase")
    dirs = {name: str(root / f"pb_{name}") for name in ("data", "migrations", "hooks", "public")}
    subprocess.run(
        [POCKETBASE, "superuser", "upsert", EMAIL, PASSWORD, "--dir", dirs["data"]],
        check=True,
        capture_output=True,
    )
    port = free_port()
    command = [POCKETBASE, "serve", "--http", f"127.0.0.1:{port}", "--dir", dirs["data"]]
    for name in ("migrations", "hooks", "public"):
        command += [f"--{name}Dir", dirs[name]]
    with (root / "pocketbase.log").open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_health(pocketbase_port: int) -> None:
    result = run_sdk("health", f"http://health.localhost:{pocketbase_port}")
    assert result["code"] == 200


def test_superuser_crud(pocketbase_port: int) -> None:
    result = run_sdk("superuser-crud", f"http://crud.localhost:{pocketbase_port}", EMAIL, PASSWORD)
    assert result["collection"]["name"] == "notes"
    assert [r["title"] for r in result["created"]] == ["alpha", "bravo", "cobalt"]
    assert result["filtered"] == {"titles": ["cobalt", "bravo"], "totalItems": 2}
    assert result["updated"] == {"id": result["created"][0]["id"], "title": "alpha2"}
    assert result["remaining"] == ["alpha2", "cobalt"]


def test_realtime_then_list(pocketbase_port: int) -> None:
    url = f"http://live.localhost:{pocketbase_port}"
    event = run_sdk("realtime", url, EMAIL, PASSWORD)
    assert event["action"] == "create"
    assert event["title"] == "realtime"
    assert "realtime" in run_sdk("list", url, EMAIL, PASSWORD, "notes")["titles"]


async def test_arun_sdk_over_plain_localhost(pocketbase_port: int) -> None:
    async with asyncio.timeout(60):
        result = await arun_sdk("health", f"http://localhost:{pocketbase_port}")
    assert result["code"] == 200


def test_failures_raise_with_the_error(pocketbase_port: int) -> None:
    with pytest.raises(AssertionError, match="Failed to authenticate"):
        run_sdk("list", f"http://x.localhost:{pocketbase_port}", EMAIL, "wrong", "notes")


def test_other_names_still_go_to_dns(pocketbase_port: int) -> None:
    with pytest.raises(AssertionError, match="ENOTFOUND"):
        run_sdk("health", f"http://nowhere.invalid:{pocketbase_port}")
