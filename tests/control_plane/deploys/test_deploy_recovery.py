"""A control plane killed in the middle of a deploy settles it when it starts again: the deploy
is marked failed, the instance it held is released and serves its previous deploy. (Crashes
during the switch itself are put back from the journal: test_deploy_journal.py.)"""

from __future__ import annotations

import io
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.support.server import ServeProcess, running_server, sign_up

GZIP = {"Content-Type": "application/gzip"}


def tar_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel, text in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()


@pytest.fixture
def server() -> Iterator[ServeProcess]:
    # the instance gets 30 s to stop: the window in which the control plane is killed
    with running_server(env={"PF_STOP_TIMEOUT_S": "30"}) as server:
        yield server


def engine_pid(server: ServeProcess, instance_id: str) -> int:
    """The engine process of the instance (its command line names its folder; not bwrap)."""
    folder = str(server.data_dir / "instances" / instance_id)
    for process in psutil.process_iter(["cmdline", "name"]):
        if process.info["name"] != "bwrap" and any(
            folder in a for a in process.info["cmdline"] or []
        ):
            return process.pid
    raise AssertionError("the instance's engine process was not found")


def wait_for(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_a_deploy_cut_off_by_a_crash_is_failed_and_the_instance_released(
    server: ServeProcess,
) -> None:
    api = server.client()
    api.headers["Authorization"] = f"Bearer {sign_up(api, 'crash@example.com')}"
    name = "crashdeploy"
    assert api.post("/api/instances", json={"name": name}).status_code == 201
    assert api.post(f"/api/instances/{name}/start").json()["status"] == "running"
    first = api.post(
        f"/api/instances/{name}/deploys",
        content=tar_of({"pb_public/index.html": "v1"}),
        headers=GZIP,
    )
    assert first.status_code == 201, first.text
    pid = engine_pid(server, api.get(f"/api/instances/{name}").json()["id"])

    # the engine is frozen: the next deploy holds the instance and waits for it to stop
    os.kill(pid, signal.SIGSTOP)
    body = tar_of({"pb_public/index.html": "v2"})

    def send() -> None:
        try:
            with server.client(api.headers["Authorization"].split()[1]) as other:
                other.post(f"/api/instances/{name}/deploys", content=body, headers=GZIP)
        except httpx.HTTPError:
            pass  # the control plane is killed under it

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: [d["status"] for d in api.get(f"/api/instances/{name}/deploys").json()][:1]
             == ["running"])  # fmt: skip
    server.stop(signal.SIGKILL)
    sender.join(30)
    os.kill(pid, signal.SIGCONT)  # it gets the SIGTERM it was sent, and ends

    server.start()
    history = api.get(f"/api/instances/{name}/deploys").json()
    assert [d["status"] for d in history] == ["failed", "done"]
    assert "stopped during this deploy" in history[0]["message"]
    assert "not changed" in history[0]["message"]
    wait_for(lambda: api.get(f"/api/instances/{name}").json()["status"] == "running")
    with server.instance_client(name) as site:
        wait_for(lambda: site.get("/").text == "v1")
    # nothing holds it any more: the next deploy goes through
    again = api.post(
        f"/api/instances/{name}/deploys",
        content=tar_of({"pb_public/index.html": "v3"}),
        headers=GZIP,
    )
    assert again.status_code == 201, again.text
    assert not list((server.data_dir / "deploys" / "work").iterdir())
    api.close()
