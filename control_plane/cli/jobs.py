"""`pocketfleet jobs ...`: scheduled requests to your instances' routes, and their runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from control_plane.cli.client import ApiClient, console, fail

app = typer.Typer(
    no_args_is_help=True,
    help="Scheduled jobs: requests to an instance's routes on a schedule (they wake it)",
)

InstanceArg = Annotated[str, typer.Argument(help="the instance")]
JobArg = Annotated[str, typer.Argument(help="the job's id (see `jobs ls`)")]


def _headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip():
            fail("a header is NAME: VALUE, e.g. --header 'Authorization: Bearer abc'")
        headers[name.strip()] = text.strip()
    return headers


def _body(value: str | None) -> str | None:
    if value is None or not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the body from {value[1:]}: {exc}")


def _show(job: dict[str, Any]) -> None:
    state = "paused" if job["paused"] else f"next run {job['next_run'] or '-'}"
    console.print(
        f"[bold]{job['id']}[/] {escape(job['schedule'])}: {job['method']} "
        f"{escape(job['path'])} on {job['instance']} ({state})"
    )


@app.command("add")
def add(
    name: InstanceArg,
    schedule: Annotated[
        str, typer.Argument(help="crontab in UTC ('*/15 * * * *'), @hourly, @daily, '@every 5m'")
    ],
    path: Annotated[str, typer.Argument(help="the instance's route, e.g. /api/hello")],
    method: Annotated[str, typer.Option("--method", "-X", help="GET, POST, PUT, ...")] = "GET",
    body: Annotated[
        str | None, typer.Option("--body", "-d", help="the body, or @FILE to read it from a file")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="'NAME: VALUE' (repeatable)")
    ] = None,
    timeout: Annotated[int, typer.Option(help="seconds one attempt may take")] = 30,
    paused: Annotated[bool, typer.Option(help="create it paused")] = False,
) -> None:
    """Schedule a request to an instance's route (a sleeping instance wakes for it)."""
    data: dict[str, Any] = {
        "schedule": schedule,
        "method": method,
        "path": path,
        "headers": _headers(header or []),
        "timeout_s": timeout,
        "paused": paused,
    }
    if body is not None:
        data["body"] = _body(body)
    _show(ApiClient().call("POST", f"/api/instances/{name}/jobs", json=data))


@app.command("ls")
def ls(name: InstanceArg) -> None:
    """List an instance's jobs."""
    table = Table("id", "schedule", "request", "state", "next run", "last run", "last status")
    for job in ApiClient().call("GET", f"/api/instances/{name}/jobs"):
        table.add_row(
            job["id"],
            escape(job["schedule"]),
            escape(f"{job['method']} {job['path']}"),
            "paused" if job["paused"] else "active",
            job["next_run"] or "-",
            job["last_run"] or "-",
            job["last_status"] or "-",
        )
    console.print(table)


@app.command("runs")
def runs(
    name: InstanceArg,
    job_id: JobArg,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
) -> None:
    """Show a job's latest runs, newest first."""
    path = f"/api/instances/{name}/jobs/{job_id}/runs"
    table = Table("started", "status", "attempts", "ms", "answer / error")
    for run in ApiClient().call("GET", path, params={"limit": limit}):
        text = run["error"] or run["response"]
        table.add_row(
            run["started"],
            run["status"],
            str(run["attempts"]),
            str(run["duration_ms"]),
            escape(" ".join(text.split())[:80]),
        )
    console.print(table)


def _set_paused(name: str, job_id: str, paused: bool) -> None:
    job = ApiClient().call("PATCH", f"/api/instances/{name}/jobs/{job_id}", json={"paused": paused})
    _show(job)


@app.command("pause")
def pause(name: InstanceArg, job_id: JobArg) -> None:
    """Stop a job's runs until it is resumed."""
    _set_paused(name, job_id, True)


@app.command("resume")
def resume(name: InstanceArg, job_id: JobArg) -> None:
    """Run a paused job on its schedule again."""
    _set_paused(name, job_id, False)


@app.command("rm")
def rm(name: InstanceArg, job_id: JobArg) -> None:
    """Remove a job and its runs."""
    ApiClient().call("DELETE", f"/api/instances/{name}/jobs/{job_id}")
    console.print(f"job {escape(job_id)} removed from {name}.")
