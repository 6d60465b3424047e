"""`pocketfleet keys ...`: your SSH public keys, for SFTP into your instances."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from control_plane.cli.client import ApiClient, console, fail

app = typer.Typer(no_args_is_help=True, help="SSH keys for SFTP into your instances")

MAX_FILE_BYTES = 64 * 1024


def _instances(row: dict[str, Any]) -> str:
    listed = row["instances"]
    if listed is None:
        return "all"
    return ", ".join(listed) or "none (every listed instance was deleted)"


def _host_line(client: ApiClient) -> None:
    host = client.call("GET", "/api/ssh-keys/host")
    if host["address"] is None:
        console.print(f"SFTP is off on this server (host key {host['fingerprint']}).")
        return
    console.print(f"SFTP server {host['address']}, host key {host['fingerprint']}")
    console.print(f"  connect: sftp -P {host['port']} INSTANCE@HOST")


@app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="the public key file, e.g. ~/.ssh/id_ed25519.pub")],
    name: Annotated[
        str | None, typer.Option("--name", help="a label (default: its comment)")
    ] = None,
    instances: Annotated[
        str | None,
        typer.Option("--instances", help="only these instances, comma-separated (default: all)"),
    ] = None,
) -> None:
    """Add a public key: it opens your instances over SFTP (all, or --instances a,b)."""
    try:
        with file.expanduser().open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    if len(data) > MAX_FILE_BYTES:
        fail(f"{file} is not a public key file (larger than {MAX_FILE_BYTES // 1024} KB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{file} is not a public key file (not text)")
    body: dict[str, Any] = {"public_key": text}
    if name is not None:
        body["name"] = name
    if instances is not None:
        body["instances"] = [part.strip() for part in instances.split(",") if part.strip()]
    row = ApiClient().call("POST", "/api/ssh-keys", json=body)
    console.print(
        f"Key {row['id']} added: {row['name']} ({row['fingerprint']}), opens {_instances(row)}."
    )


@app.command("ls")
def ls() -> None:
    """List your SSH keys, and the SFTP server's address and host key fingerprint."""
    client = ApiClient()
    _host_line(client)
    table = Table("id", "name", "type", "fingerprint", "instances", "last used")
    for row in client.call("GET", "/api/ssh-keys"):
        table.add_row(
            row["id"],
            row["name"],
            row["key_type"],
            row["fingerprint"],
            _instances(row),
            row["last_used"] or "never",
        )
    console.print(table)


@app.command("rm")
def rm(key_id: Annotated[str, typer.Argument(help="the key's id (see `keys ls`)")]) -> None:
    """Remove a key; SFTP sessions opened with it end at once."""
    ApiClient().call("DELETE", f"/api/ssh-keys/{key_id}")
    console.print(f"Key {key_id} removed.")
