"""The `pocketfleet` CLI against a running control plane (real processes)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import BIN, ServeProcess, running_server


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    with running_server() as server:
        yield server


class Cli:
    def __init__(self, serve: ServeProcess, home: Path) -> None:
        self.env = {**serve.env(), "PF_URL": serve.url, "XDG_CONFIG_HOME": str(home)}
        self.env.pop("PF_TOKEN", None)

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "pocketfleet"), *args],
            env={**self.env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result


@pytest.fixture
def cli(serve: ServeProcess, tmp_path: Path) -> Cli:
    return Cli(serve, tmp_path)


def test_signup_login_and_the_instance_verbs(cli: Cli, serve: ServeProcess) -> None:
    signup = cli("signup", "--email", "cli@example.com", "--password", "cli-password-1")
    assert "Logged in" in signup.stdout
    assert "cli@example.com" in cli("whoami").stdout

    created = cli("instances", "create", "clidemo")
    assert "running" in created.stdout
    assert f"http://clidemo.localhost:{serve.port}" in created.stdout
    listed = cli("instances", "ls").stdout
    assert "clidemo" in listed and "running" in listed

    assert "stopped" in cli("instances", "stop", "clidemo").stdout
    assert "running" in cli("instances", "start", "clidemo").stdout
    assert "Server started" in cli("instances", "logs", "clidemo", "--tail", "20").stdout
    env = cli("instances", "env", "clidemo", "GREETING=hello-world").stdout
    assert "GREETING" in env and "hello-world" not in env

    assert "0.40.6" in cli("engines", "ls").stdout
    assert "deleted" in cli("instances", "rm", "clidemo", "--yes", "--purge").stdout
    assert "clidemo" not in cli("instances", "ls").stdout


def test_login_with_wrong_password_fails_clearly(cli: Cli) -> None:
    cli("signup", "--email", "wrong@example.com", "--password", "right-password")
    result = cli("login", "--email", "wrong@example.com", "--password", "nope-nope-nope", ok=False)
    assert result.returncode == 1
    assert "401" in result.stderr and "wrong email or password" in result.stderr


def test_commands_without_login_say_how_to_log_in(cli: Cli) -> None:
    result = cli("instances", "ls", ok=False)
    assert result.returncode == 1
    assert "pocketfleet login" in result.stderr


def test_refusals_are_shown_with_their_reason(cli: Cli) -> None:
    cli("signup", "--email", "refused@example.com", "--password", "refused-password")
    bad = cli("instances", "create", "Bad_Name", ok=False)
    assert bad.returncode == 1
    assert "422" in bad.stderr and "name" in bad.stderr
    missing = cli("instances", "stop", "nosuchinstance", ok=False)
    assert "404" in missing.stderr
    operator_only = cli("fleet", "ls", ok=False)
    assert "403" in operator_only.stderr


def test_env_shows_masks_only_and_refusals_name_the_variable(cli: Cli) -> None:
    cli("signup", "--email", "env@example.com", "--password", "env-password-1")
    cli("instances", "create", "clienv", "--no-wait")
    shown = cli("instances", "env", "clienv", "SMTP_PASSWORD=horse-battery-staple").stdout
    assert "SMTP_PASSWORD" in shown and "••••••••" in shown and "17–32 characters" in shown
    assert "horse" not in shown and "staple" not in shown
    refused = cli("instances", "env", "clienv", "LD_PRELOAD=/tmp/x.so", ok=False)
    assert refused.returncode == 1
    assert "422" in refused.stderr
    assert "LD_PRELOAD: interpreted by the dynamic linker" in refused.stderr
    assert "SMTP_PASSWORD" in cli("instances", "env", "clienv").stdout  # nothing changed


def test_an_unreachable_server_is_a_clear_error(cli: Cli) -> None:
    cli.env["PF_URL"] = "http://127.0.0.1:9"
    result = cli("instances", "ls", ok=False)
    assert result.returncode == 1
    assert "cannot reach the control plane" in result.stderr


def test_backups_drill_rebuilds_the_replica_and_ls_shows_it(cli: Cli) -> None:
    cli("signup", "--email", "drill@example.com", "--password", "drill-password-1")
    cli("instances", "create", "clidrill")
    deadline = time.monotonic() + 60
    while True:  # 409 until the first replica is written, or while a background drill runs
        drilled = cli("backups", "drill", "clidrill", ok=False)
        if drilled.returncode == 0 or time.monotonic() > deadline:
            break
        assert "409" in drilled.stderr, drilled.stderr
        time.sleep(0.5)
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    assert "clidrill: ok at" in drilled.stdout and "generation 0" in drilled.stdout
    listed = cli("backups", "ls", "clidrill").stdout
    assert "last restore drill: ok" in listed and "replica generation 0" in listed
    missing = cli("backups", "drill", "nosuchinstance", ok=False)
    assert missing.returncode == 1 and "404" in missing.stderr
