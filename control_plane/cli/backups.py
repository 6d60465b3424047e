"""`pocketfleet backups ...`: snapshots, downloads, restores and schedules of an instance."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from control_plane.cli.client import ApiClient, console, describe_error, fail
from control_plane.cli.instances import megabytes

app = typer.Typer(no_args_is_help=True, help="Backups of your instances")

STATUS_STYLE = {
    "good": "green",
    "ok": "green",
    "running": "yellow",
    "error": "yellow",
    "failed": "bold red",
    "corrupt": "bold red",
}


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


@app.command("ls")
def ls(name: str) -> None:
    """List the instance's snapshots and its point-in-time window."""
    body: dict[str, Any] = ApiClient().call("GET", f"/api/instances/{name}/backups")
    table = Table("id", "status", "size", "created", "trigger", "reason")
    for snap in body["snapshots"]:
        table.add_row(
            snap["id"],
            _styled(snap["status"]),
            megabytes(snap["size"]),
            snap["created"],
            snap["trigger"],
            snap["reason"][:60],
        )
    console.print(table)
    schedule = body["schedule"]
    console.print(
        f"schedule: {schedule['schedule']}"
        + (" (fleet default)" if schedule["default"] else "")
        + f", next: {schedule['next_run'] or '-'}; store: {body['store']}"
    )
    console.print(
        f"point-in-time restore: from {body['restorable_from'] or '-'} "
        f"to {body['restorable_to'] or '-'} (replica generation {body['replica_generation']})"
    )
    drill = body.get("drill")
    if drill:
        console.print(f"last restore drill: {_drill_line(drill)}")


def _drill_line(drill: dict[str, Any]) -> str:
    seconds = f", {drill['seconds']:.1f} s" if drill.get("seconds") is not None else ""
    problem = f": {drill['problem']}" if drill["problem"] else ""
    return (
        f"{_styled(drill['status'])} at {drill['at']} (generation {drill['generation']}"
        f"{seconds}){problem}"
    )


@app.command("drill")
def drill(name: str) -> None:
    """Rebuild the instance's replica now and check the result (the instance is untouched).
    A corrupt replica starts a new generation; exits 1 unless the drill passed."""
    with console.status(f"Rebuilding the replica of {name}…"):
        result = ApiClient().call("POST", f"/api/instances/{name}/backups/drill")
    console.print(f"{name}: {_drill_line(result)}")
    if result["status"] != "ok":
        raise typer.Exit(1)


@app.command("create")
def create(name: str) -> None:
    """Take a snapshot now."""
    with console.status(f"Snapshotting {name}…"):
        snap = ApiClient().call("POST", f"/api/instances/{name}/backups")
    console.print(f"{snap['id']}: {_styled(snap['status'])}, {megabytes(snap['size'])}")


@app.command("download")
def download(
    name: str,
    backup_id: str,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write")] = None,
) -> None:
    """Download a snapshot archive (with a progress bar)."""
    client = ApiClient()
    url = f"/api/instances/{name}/backups/{backup_id}/download"
    try:
        with client.http.stream("GET", url, timeout=None) as response:
            if response.is_error:
                response.read()
                fail(describe_error(response))
            disposition = response.headers.get("content-disposition", "")
            default = disposition.partition('filename="')[2].rstrip('"') or f"{backup_id}.tar.gz"
            target = output or Path(default)
            total = int(response.headers.get("content-length", 0)) or None
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=console) as progress, target.open("wb") as out:
                task = progress.add_task(target.name, total=total)
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    progress.advance(task, len(chunk))
    except httpx.HTTPError as exc:
        fail(f"the download broke off: {exc}")
    console.print(f"Saved {target}")


@app.command("restore")
def restore(
    name: str,
    backup_id: Annotated[str | None, typer.Argument(help="snapshot to restore")] = None,
    at: Annotated[
        datetime | None, typer.Option(help="restore the databases to this moment (ISO-8601)")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Restore an instance from a snapshot, or (--at) to a point in time. The instance stops
    meanwhile; its current folder is kept in the trash as a safety copy."""
    if (backup_id is None) == (at is None):
        fail("give either a snapshot id or --at TIME")
    if not yes:
        typer.confirm(f"Replace the data of {name}?", abort=True)
    client = ApiClient()
    with console.status(f"Restoring {name}…"):
        if backup_id is not None:
            done = client.call("POST", f"/api/instances/{name}/backups/{backup_id}/restore")
        else:
            assert at is not None
            body = {"at": at.isoformat()}
            done = client.call("POST", f"/api/instances/{name}/restore", json=body)
    console.print(f"Restored {name} ({done['id']}); previous data kept at {done['safety_copy']}")


@app.command("rm")
def rm(
    name: str,
    backup_id: str,
    force: Annotated[bool, typer.Option(help="even the newest good one")] = False,
) -> None:
    """Delete a snapshot."""
    params = {"force": "true"} if force else {}
    ApiClient().call("DELETE", f"/api/instances/{name}/backups/{backup_id}", params=params)
    console.print(f"Deleted {backup_id}.")


@app.command("schedule")
def schedule(
    name: str,
    when: Annotated[
        str | None, typer.Argument(help="crontab (UTC), @daily, @every 6h; omit to show")
    ] = None,
    default: Annotated[bool, typer.Option(help="go back to the fleet's default")] = False,
) -> None:
    """Show or set the instance's snapshot schedule."""
    client = ApiClient()
    path = f"/api/instances/{name}/backups/schedule"
    if when is None and not default:
        result = client.call("GET", path)
    else:
        result = client.call("PUT", path, json={"schedule": None if default else when})
    console.print(
        f"{name}: {result['schedule']}" + (" (fleet default)" if result["default"] else "")
        + f", next run {result['next_run'] or '-'}"
    )  # fmt: skip


@app.command("fleet")
def fleet() -> None:
    """(operators) Every instance's last good snapshot, replication lag, who is overdue, and
    the last restore drill of each replica."""
    table = Table("name", "owner", "last good", "lag", "overdue", "drill", "last failure")
    for row in ApiClient().call("GET", "/api/fleet/backups"):
        lag = row["replication_lag_s"]
        table.add_row(
            row["name"],
            row["owner_email"],
            row["last_good_at"] or "-",
            f"{lag:.0f} s" if lag is not None else "-",
            "[bold red]yes[/]" if row["overdue"] else "no",
            _styled(row["drill_status"]) if row["drill_status"] else "-",
            (row["last_failure"] or row["drill_problem"] or "")[:50],
        )
    console.print(table)
