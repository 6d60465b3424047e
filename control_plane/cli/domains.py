"""`pocketfleet domains ...`: custom domains of your instances."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from control_plane.cli.client import ApiClient, console

app = typer.Typer(no_args_is_help=True, help="Custom domains of your instances")

InstanceArg = Annotated[str, typer.Argument(help="the instance")]
DomainArg = Annotated[str, typer.Argument(help="the domain, e.g. shop.example.com")]


def _instructions(row: dict[str, Any]) -> None:
    publish = row["publish"]
    route = publish["route"]
    console.print(f"[bold]{row['domain']}[/] for {row['instance']}: {row['status']}")
    if row["status"] == "verified":
        return
    console.print(f"1. Point it here: {route['type']} {route['name']} -> {route['value']}")
    dns = publish["dns"]
    console.print(f"2. Prove it is yours: {dns['type']} {dns['name']} = {dns['value']}")
    if "http" in publish:
        console.print(
            f"   (or, once step 1 is live, nothing more: {publish['http']['url']} "
            "is answered by pocketfleet)"
        )
    console.print(f"3. pocketfleet domains verify {row['instance']} {row['domain']}")


@app.command("add")
def add(name: InstanceArg, domain: DomainArg) -> None:
    """Claim a domain for an instance and show what to publish."""
    _instructions(
        ApiClient().call("POST", f"/api/instances/{name}/domains", json={"domain": domain})
    )


@app.command("verify")
def verify(name: InstanceArg, domain: DomainArg) -> None:
    """Check the published proof; once it holds, the domain is served."""
    row = ApiClient().call("POST", f"/api/instances/{name}/domains/{domain}/verify")
    console.print(f"{row['domain']} is verified ({row['verified_by']}) and served by {name}.")


@app.command("ls")
def ls(name: InstanceArg) -> None:
    """List an instance's custom domains."""
    table = Table("domain", "status", "verified", "last check")
    for row in ApiClient().call("GET", f"/api/instances/{name}/domains"):
        table.add_row(
            row["domain"],
            row["status"],
            f"{row['verified']} ({row['verified_by']})" if row["verified"] else "-",
            row["last_error"] or "-",
        )
    console.print(table)


@app.command("rm")
def rm(name: InstanceArg, domain: DomainArg) -> None:
    """Stop serving a domain and forget it."""
    ApiClient().call("DELETE", f"/api/instances/{name}/domains/{domain}")
    console.print(f"{domain} removed from {name}.")
