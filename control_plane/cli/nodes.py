"""`pocketfleet nodes ...`: the machines instances run on (operators)."""

from __future__ import annotations

import typer
from rich.table import Table

from control_plane.cli.client import ApiClient, console

app = typer.Typer(no_args_is_help=True, help="The machines instances run on (operators)")

STATE_STYLE = {"ready": "green", "down": "bold red"}


def _gigabytes(value: int | None) -> str:
    return f"{value / 1024**3:.1f} GB" if value is not None else "-"


@app.command("ls")
def nodes_ls() -> None:
    """Every node: address, state, memory (free / total), disk, instances running and asleep."""
    table = Table(
        "name", "address", "role", "state", "memory free", "disk free", "running", "asleep"
    )
    for row in ApiClient().call("GET", "/api/nodes"):
        style = STATE_STYLE.get(row["state"], "yellow")
        state = f"[{style}]{row['state']}[/]"
        if row["availability"] != "active":
            state += f" ({row['availability']})"
        if row.get("drained"):
            state += " (drained)"
        table.add_row(
            row["name"],
            row["address"],
            row["role"],
            state,
            f"{_gigabytes(row['memory_free_bytes'])} / {_gigabytes(row['memory_bytes'])}",
            f"{_gigabytes(row['disk_free_bytes'])} / {_gigabytes(row['disk_bytes'])}",
            str(row["instances_running"]),
            str(row["instances_asleep"]),
        )
    console.print(table)


@app.command("join-command")
def nodes_join_command() -> None:
    """What to run on a new machine so that it joins the swarm (then label it as printed)."""
    found = ApiClient().call("GET", "/api/nodes/join-command")
    print(found["command"])
    console.print(f"then, on a manager: {found['label_command']}", style="dim", highlight=False)


@app.command("drain")
def nodes_drain(name: str) -> None:
    """Take no more instances on the node, and move each of its instances to another node."""
    drained = ApiClient().call("POST", f"/api/nodes/{name}/drain", timeout=None)
    for moved in drained["moved"]:
        print(f"{moved['instance']}: on node {moved['node']}, down {moved['downtime_ms']:.0f} ms")
    print(f"node {drained['node']} drained ({len(drained['moved'])} instances moved)")
