"""Commands that act on this machine's control plane directly: `serve`, `down`, `operator add`."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from control_plane.cli.client import console, fail
from control_plane.data_dir import UMASK
from control_plane.logs import configure_logging
from control_plane.settings import Settings

PASSWORD_MIN = 10  # as the API requires (control_plane.schemas)
SERVE_STOP_TIMEOUT_S = 30.0  # `down` waits this long for `serve` to end, then kills it

HttpOpt = Annotated[str | None, typer.Option(help="HOST:PORT to listen on [PF_HTTP]")]
DataOpt = Annotated[Path | None, typer.Option(help="data folder [PF_DATA_DIR]")]
DomainOpt = Annotated[str | None, typer.Option(help="instances at NAME.DOMAIN [PF_DOMAIN]")]


class ProxyKind(StrEnum):
    embedded = "embedded"
    caddy = "caddy"


def load_settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _lock_path(settings: Settings) -> Path:
    return settings.data_dir / "serve.lock"


def _hold_lock(settings: Settings) -> int:
    """Only one `serve` per data folder: its reconciler must be the only one."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(settings), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"another `pocketfleet serve` is using {settings.data_dir}")
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def serve(
    http: HttpOpt = None,
    data_dir: DataOpt = None,
    domain: DomainOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    proxy: Annotated[
        ProxyKind | None,
        typer.Option(help="who serves instances: the embedded proxy or Caddy [PF_PROXY]"),
    ] = None,
    start_caddy: Annotated[
        bool | None,
        typer.Option(
            "--start-caddy/--no-start-caddy",
            help="run Caddy as a supervised child (implies --proxy caddy) [PF_START_CADDY]",
        ),
    ] = None,
) -> None:
    """Run the control plane, dashboard API and embedded proxy (instances keep running when it
    stops; `pocketfleet down` stops them)."""
    from control_plane.api.app import create_app
    from control_plane.caddy_frontend import admin_socket_for

    if start_caddy and proxy is None:
        proxy = ProxyKind.caddy
    settings = load_settings(
        http=http,
        data_dir=data_dir,
        domain=domain,
        proxy=proxy.value if proxy is not None else None,
        start_caddy=start_caddy,
    )
    os.umask(UMASK)  # everything the control plane writes is its own (control_plane.data_dir)
    lock_fd = _hold_lock(settings)
    configure_logging(log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        proxy_headers=False,  # the embedded proxy sets X-Forwarded-* itself
        access_log=False,  # per-request cost on the proxy path; activity is tracked anyway
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    console.print(
        f"pocketfleet on http://{settings.http} — instances at "
        f"{settings.instance_url('NAME')}, data in {settings.data_dir.resolve()}"
    )
    console.print(f"pocketfleet-engine instances: {_pocketfleet_path(settings)}")
    if settings.proxy == "caddy":
        started = "a Caddy child" if settings.start_caddy else "Caddy"
        console.print(
            f"instances served by {started} (admin {admin_socket_for(settings)}) on "
            f"{settings.caddy_http}"
            + (f" and {settings.caddy_https}" if settings.caddy_tls != "off" else "")
        )
    try:
        uvicorn.Server(config).run()
    finally:
        os.close(lock_fd)


def _pocketfleet_path(settings: Settings) -> str:
    """How instances of the `pocketfleet` engine start here, and why."""
    from control_plane.drivers.zygote import serving_path
    from control_plane.engines.pocketfleet import PocketfleetEngine

    return serving_path(settings, PocketfleetEngine()).describe()


def _serve_pid(settings: Settings) -> int | None:
    try:
        text = _lock_path(settings).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _gone(process: Any) -> bool:
    import psutil

    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _stop_serve(settings: Settings) -> None:
    """SIGTERM the `serve` of this data folder and wait until it is gone (a zombie counts:
    it is done, only its parent has not collected it); SIGKILL it after
    `SERVE_STOP_TIMEOUT_S` (its instances keep running either way: `down` stops them)."""
    pid = _serve_pid(settings)
    if pid is None or pid == os.getpid():
        return
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        if "pocketfleet" not in " ".join(process.cmdline()):
            return  # a stale lock file; the pid now belongs to something else
        process.terminate()
        deadline = time.monotonic() + SERVE_STOP_TIMEOUT_S
        while not _gone(process) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _gone(process):
            console.print(f"serve did not stop within {SERVE_STOP_TIMEOUT_S:g} s; killing it")
            process.kill()
            deadline = time.monotonic() + 10
            while not _gone(process) and time.monotonic() < deadline:
                time.sleep(0.05)


def down(data_dir: DataOpt = None) -> None:
    """Stop `pocketfleet serve` and every instance, cleanly; the next `serve` starts them again."""
    settings = load_settings(data_dir=data_dir)
    _stop_serve(settings)
    from control_plane.admin import stop_all_instances
    from control_plane.backups.replication import stop_recorded

    try:
        stopped = asyncio.run(stop_all_instances(settings))
    finally:
        replication = " and replication" if stop_recorded(settings) else ""
    console.print(f"Stopped {stopped} instance(s){replication}.")


operator_app = typer.Typer(no_args_is_help=True, help="Operators of this server")


def _run_admin(action: Coroutine[Any, Any, object]) -> None:
    from control_plane.services.errors import ServiceError

    try:
        asyncio.run(action)
    except ServiceError as exc:
        fail(exc.message)


@operator_app.command("create")
def operator_create(
    email: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    data_dir: DataOpt = None,
) -> None:
    """Create an operator account (whatever the sign-up mode)."""
    settings = load_settings(data_dir=data_dir)
    if len(password) < PASSWORD_MIN:
        fail(f"the password needs at least {PASSWORD_MIN} characters")
    from control_plane.admin import create_operator

    _run_admin(create_operator(settings, email, password))
    console.print(f"Operator {email} created.")


@operator_app.command("add")
def operator_add(email: str, data_dir: DataOpt = None) -> None:
    """Make an existing account an operator."""
    settings = load_settings(data_dir=data_dir)
    from control_plane.admin import make_operator

    _run_admin(make_operator(settings, email))
    console.print(f"{email} is now an operator.")
