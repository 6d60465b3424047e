"""`pocketfleet instances ...`: the caller's instances."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from control_plane.cli.client import ApiClient, console, fail

app = typer.Typer(no_args_is_help=True, help="Your instances")

STATE_STYLE = {
    "running": "green", "provisioning": "yellow", "stopped": "dim", "hibernated": "blue",
    "failed": "bold red", "deleting": "magenta",
}  # fmt: skip


def styled(state: str) -> str:
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/]" if style else state


def duration(seconds: float) -> str:
    """`45s`, `12m`, `3h`, `2d`: a rough length of time."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def state_text(row: dict[str, Any]) -> str:
    """The styled state, with the time asleep of a hibernated instance."""
    asleep = row.get("asleep_s")
    return styled(row["status"]) + (f" {duration(asleep)}" if asleep is not None else "")


def megabytes(value: int | None) -> str:
    return f"{value / 1_048_576:.1f} MB" if value else "-"


DISK_STYLE = {"warning": "yellow", "over": "bold red"}


def disk_text(row: dict[str, Any]) -> str:
    """`12.3 MB / 1024 MB` (its last measured usage against its quota), styled when near or
    over the quota; `-` when not measured yet."""
    if row.get("disk_bytes") is None:
        return "-"
    limit = row.get("disk_limit_mb")
    text = megabytes(row["disk_bytes"]) + (f" / {limit} MB" if limit else " (no quota)")
    state = row.get("disk_state", "")
    style = DISK_STYLE.get(state)
    return f"[{style}]{text} {state}[/]" if style else text


def wait_ready(client: ApiClient, name: str, timeout: float = 120) -> dict[str, Any]:
    """Poll the instance until it runs (or fails), showing progress."""
    deadline = time.monotonic() + timeout
    with console.status(f"Starting {name}…") as status:
        while True:
            row: dict[str, Any] = client.call("GET", f"/api/instances/{name}")
            status.update(f"{name}: {row['status']} {row['status_reason']}")
            if row["status"] in ("running", "failed") or time.monotonic() > deadline:
                return row
            time.sleep(0.2)


def show(row: dict[str, Any]) -> None:
    console.print(
        f"{row['name']}: {styled(row['status'])} — {row['url']}"
        + (f"  ({row['status_reason']})" if row["status_reason"] else "")
    )


@app.command("create")
def create(
    name: str,
    engine: Annotated[str | None, typer.Option(help="pocketbase (default) or another")] = None,
    version: Annotated[str | None, typer.Option(help="engine version")] = None,
    superuser_password: Annotated[
        str | None, typer.Option(help="make you a superuser of the instance with this password")
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait until it runs")] = True,
) -> None:
    """Create an instance, served at NAME.domain."""
    client = ApiClient()
    body: dict[str, Any] = {"name": name}
    for key, value in (
        ("engine", engine),
        ("version", version),
        ("superuser_password", superuser_password),
    ):
        if value:
            body[key] = value
    row = client.call("POST", "/api/instances", json=body)
    if wait:
        row = wait_ready(client, name)
    show(row)
    if row["status"] == "failed":
        raise typer.Exit(1)


@app.command("ls")
def ls() -> None:
    """List your instances."""
    table = Table("name", "state", "url", "engine", "memory", "disk", "last request")
    for row in ApiClient().call("GET", "/api/instances"):
        table.add_row(
            row["name"],
            state_text(row),
            row["url"],
            f"{row['engine']} {row['version']}",
            megabytes(row["memory_bytes"]),
            disk_text(row),
            row["last_request"] or "-",
        )
    console.print(table)


@app.command("show")
def show_one(name: str) -> None:
    """Show one instance."""
    row = ApiClient().call("GET", f"/api/instances/{name}")
    for key, value in row.items():
        console.print(f"[bold]{key}[/]: {value}")
    console.print(f"[bold]disk[/]: {disk_text(row)}")


@app.command("start")
def start(name: str) -> None:
    """Start an instance (no-op when running)."""
    show(ApiClient().call("POST", f"/api/instances/{name}/start"))


@app.command("stop")
def stop(name: str) -> None:
    """Stop an instance (no-op when stopped)."""
    show(ApiClient().call("POST", f"/api/instances/{name}/stop"))


@app.command("hibernate")
def hibernate(name: str) -> None:
    """Hibernate a running instance now: no memory used; its next request wakes it."""
    show(ApiClient().call("POST", f"/api/instances/{name}/hibernate"))


@app.command("wake")
def wake(name: str) -> None:
    """Wake a hibernated instance now (a request to it would, too)."""
    show(ApiClient().call("POST", f"/api/instances/{name}/wake"))


@app.command("move")
def move(
    name: str,
    node: Annotated[str, typer.Option(help="the target node (its id or hostname)")],
) -> None:
    """Operators: move an instance to another node, with its data; prints its downtime."""
    moved = ApiClient().call("POST", f"/api/instances/{name}/move", json={"node": node})
    print(f"{moved['instance']}: on node {moved['node']}, down {moved['downtime_ms']:.0f} ms")


@app.command("set")
def set_(
    name: str,
    version: Annotated[str | None, typer.Option(help="switch to this engine version")] = None,
    idle_timeout: Annotated[
        int | None, typer.Option(help="idle limit in seconds; 0 = never")
    ] = None,
) -> None:
    """Change an instance's engine version or settings (restarts it when needed)."""
    body: dict[str, Any] = {}
    if version:
        body["version"] = version
    if idle_timeout is not None:
        body["idle_timeout_s"] = idle_timeout
    if not body:
        fail("nothing to change: pass --version or --idle-timeout")
    show(ApiClient().call("PATCH", f"/api/instances/{name}", json=body))


@app.command("env")
def env(
    name: str,
    assignments: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE ...")] = None,
) -> None:
    """Show, or replace, the instance's environment variables (KEY=VALUE ...)."""
    client = ApiClient()
    if assignments:
        pairs = dict(a.split("=", 1) for a in assignments if "=" in a)
        if len(pairs) != len(assignments):
            fail("write each variable as KEY=VALUE")
        result = client.call("PUT", f"/api/instances/{name}/env", json={"vars": pairs})
    else:
        result = client.call("GET", f"/api/instances/{name}/env")
    table = Table("name", "value (masked)", "length", "note")
    for var in result["vars"]:
        note = f"not passed to the instance: {var['refused']}" if var.get("refused") else ""
        table.add_row(var["name"], var["preview"], var["length_class"], note)
    console.print(table)


@app.command("logs")
def logs(name: str, tail: Annotated[int, typer.Option(help="lines to show")] = 100) -> None:
    """Print the instance's recent output."""
    for line in ApiClient().call("GET", f"/api/instances/{name}/logs", params={"tail": tail})[
        "lines"
    ]:
        console.print(line, markup=False, highlight=False)


@app.command("rm")
def rm(
    name: str,
    purge: Annotated[bool, typer.Option(help="delete the data now, not after 7 days")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Delete an instance (its folder is kept in the trash for 7 days unless --purge)."""
    if not yes:
        typer.confirm(f"Delete {name}?", abort=True)
    ApiClient().call("DELETE", f"/api/instances/{name}", params={"purge": purge})
    console.print(f"{name} deleted" + (" and purged." if purge else " (kept in the trash)."))
