"""`pocketfleet signup`, `login`, `logout`, `whoami`, and `tokens`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from control_plane.cli.client import ApiClient, console, save_credentials, server_url

app = typer.Typer(no_args_is_help=True, help="API tokens for scripts")

EmailOpt = Annotated[str, typer.Option(prompt=True, help="account email")]
PasswordOpt = Annotated[str, typer.Option(prompt=True, hide_input=True, help="password")]


def signup(email: EmailOpt, password: PasswordOpt, invite: str | None = None) -> None:
    """Create an account on the control plane (then log in)."""
    client = ApiClient(token="")
    body: dict[str, str] = {"email": email, "password": password}
    if invite:
        body["invite"] = invite
    account = client.call("POST", "/api/accounts", json=body)
    console.print(f"Account [bold]{account['email']}[/] created.")
    login(email, password)


def login(email: EmailOpt, password: PasswordOpt) -> None:
    """Log in and keep the session token for later commands."""
    url = server_url()
    client = ApiClient(url, token="")
    session = client.call("POST", "/api/sessions", json={"email": email, "password": password})
    path = save_credentials(url, session["token"])
    console.print(f"Logged in to {url} as [bold]{email}[/] (token saved in {path}).")


def logout() -> None:
    """End the saved session."""
    ApiClient().call("DELETE", "/api/sessions/current")
    save_credentials(server_url(), "")
    console.print("Logged out.")


def whoami() -> None:
    """Show the account of the saved token."""
    me = ApiClient().call("GET", "/api/accounts/me")
    role = "operator" if me["is_operator"] else "user"
    console.print(f"{me['email']} ({role}) on {server_url()}")


def _opens(row: dict[str, Any]) -> str:
    if row["scope"] != "deploy":
        return "everything"
    listed = row["instances"]
    if listed is None:
        return "deploys of all instances"
    return "deploys of " + (", ".join(listed) or "none (every listed instance was deleted)")


@app.command("ls")
def tokens_ls() -> None:
    """List API tokens, with what each may do."""
    table = Table("id", "name", "prefix", "scope", "may do", "created", "last used")
    for row in ApiClient().call("GET", "/api/tokens"):
        table.add_row(
            row["id"],
            row["name"],
            row["prefix"] + "…",
            row["scope"],
            _opens(row),
            row["created"],
            row["last_used"] or "-",
        )
    console.print(table)


@app.command("create")
def tokens_create(
    name: str,
    scope: Annotated[
        str,
        typer.Option("--scope", help="full (everything) or deploy (only deploys, e.g. for CI)"),
    ] = "full",
    instances: Annotated[
        str | None,
        typer.Option(
            "--instances",
            help="with --scope deploy: only these instances, comma-separated (default: all)",
        ),
    ] = None,
) -> None:
    """Create an API token (shown once); `--scope deploy` makes one that may only deploy."""
    body: dict[str, Any] = {"name": name, "scope": scope}
    if instances is not None:
        body["instances"] = [part.strip() for part in instances.split(",") if part.strip()]
    row = ApiClient().call("POST", "/api/tokens", json=body)
    console.print(
        f"Token [bold]{row['name']}[/] ({_opens(row)}; shown once, keep it safe):\n{row['token']}"
    )


@app.command("rm")
def tokens_rm(token_id: str) -> None:
    """Revoke an API token."""
    ApiClient().call("DELETE", f"/api/tokens/{token_id}")
    console.print(f"Token {token_id} revoked.")
