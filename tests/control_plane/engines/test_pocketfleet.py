"""The `pocketfleet` engine: its command lines, its registration, and a real instance of it
created through the control plane API and used through the embedded proxy."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.engines.base import EngineError, InstanceLayout
from control_plane.engines.pocketfleet import PocketfleetEngine, package_version
from control_plane.engines.registry import default_registry
from control_plane.settings import Settings
from tests.support.server import running_server, sign_up

EMAIL = "owner@example.com"
SUPERUSER_PASSWORD = "superuser-pass-1"


def test_serve_command_runs_the_runtime_module(tmp_path: Path) -> None:
    engine = PocketfleetEngine()
    layout = InstanceLayout(tmp_path / "inst")

    argv = engine.serve_command(package_version(), layout, 20123)

    assert argv == [
        sys.executable, "-m", "instance_runtime", "serve",
        "--dir", str(layout.data_dir), "--http", "127.0.0.1:20123",
        "--hooksDir", str(layout.hooks_dir), "--migrationsDir", str(layout.migrations_dir),
    ]  # fmt: skip
    assert engine.health_path == "/api/health"


def test_superuser_task_uses_the_same_data_folder_and_keeps_the_password_off_argv(
    tmp_path: Path,
) -> None:
    engine = PocketfleetEngine()
    layout = InstanceLayout(tmp_path / "inst")

    task = engine.superuser_task(package_version(), layout, "a@example.com", "secret-123")

    assert task.argv[1:5] == ["-m", "instance_runtime", "superuser", "upsert"]
    assert task.argv[5:] == ["--dir", str(layout.data_dir), "--", "a@example.com"]
    assert "secret-123" not in task.argv
    assert task.env == {"PF_SUPERUSER_PASSWORD": "secret-123"}


def test_the_runtime_takes_the_password_from_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "pb_data"
    env = {"PATH": "/usr/bin:/bin", "PF_SUPERUSER_PASSWORD": "from-the-env-123"}
    argv = [sys.executable, "-m", "instance_runtime", "superuser", "upsert", "a@example.com"]
    done = subprocess.run(
        [*argv, "--dir", str(data)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        [*argv, "--dir", str(data)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "PF_SUPERUSER_PASSWORD" in missing.stderr


def test_an_email_starting_with_a_dash_is_not_an_option(tmp_path: Path) -> None:
    engine = PocketfleetEngine()
    layout = InstanceLayout(tmp_path / "inst")
    task = engine.superuser_task(package_version(), layout, "-dash@example.com", "secret-123")
    env = {"PATH": "/usr/bin:/bin", **task.env}
    done = subprocess.run(task.argv, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert '"-dash@example.com"' in done.stdout, done.stdout


def test_only_the_installed_version_exists(tmp_path: Path) -> None:
    engine = PocketfleetEngine()
    assert engine.installed_versions() == [package_version()] == [engine.default_version()]
    with pytest.raises(EngineError):
        engine.install("9.9.9")
    with pytest.raises(EngineError):
        engine.serve_command("9.9.9", InstanceLayout(tmp_path), 1)


def test_registered_next_to_pocketbase(tmp_path: Path) -> None:
    registry = default_registry(Settings(data_dir=tmp_path))
    assert registry.names() == ["pocketbase", "pocketfleet"]
    assert isinstance(registry.get("pocketfleet"), PocketfleetEngine)


def _wait_running(api: httpx.Client, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row: dict[str, Any] = api.get(f"/api/instances/{name}").json()
        if row["status"] == "running" or time.monotonic() > deadline:
            assert row["status"] == "running", row["status_reason"]
            return row
        time.sleep(0.1)


def test_a_pocketfleet_instance_through_the_proxy() -> None:
    # The runtime runs on this venv's Python, whose interpreter may live where instance uids
    # cannot reach it (pyenv under /root, mode 0700): run instances as the server's own user.
    with running_server(env={"PF_INSTANCE_USERS": "false"}) as serve:
        api = serve.client()
        api.headers["Authorization"] = f"Bearer {sign_up(api, EMAIL)}"
        created = api.post(
            "/api/instances",
            json={"name": "own", "engine": "pocketfleet", "superuser_password": SUPERUSER_PASSWORD},
        )
        assert created.status_code == 201, created.text
        assert created.json()["engine"] == "pocketfleet"
        _wait_running(api, "own")

        with serve.instance_client("own") as pb:
            health = pb.get("/api/health")
            assert health.status_code == 200, health.text
            assert health.json() == {"message": "API is healthy.", "code": 200, "data": {}}
            auth = pb.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": EMAIL, "password": SUPERUSER_PASSWORD},
            )
            assert auth.status_code == 200, auth.text
            pb.headers["Authorization"] = auth.json()["token"]
            made = pb.post(
                "/api/collections",
                json={
                    "name": "notes",
                    "type": "base",
                    "fields": [{"name": "title", "type": "text"}],
                },
            )
            assert made.status_code == 200, made.text
            note = pb.post("/api/collections/notes/records", json={"title": "hello"})
            assert note.status_code == 200, note.text
            listed = pb.get("/api/collections/notes/records").json()
            assert [item["title"] for item in listed["items"]] == ["hello"]
            assert listed["totalItems"] == 1
