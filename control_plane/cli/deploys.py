"""`pocketfleet deploy NAME [DIR]` and `pocketfleet deploys ls NAME`: deploys of an instance's
code folders (`pb_hooks/`, `pb_migrations/`, `pb_public/` of DIR) as one tar.gz, with their
history and rollback. Works unattended with only `PF_URL` and `PF_TOKEN` set."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from control_plane.cli.client import ApiClient, console, describe_error, fail

CODE_FOLDERS = ("pb_hooks", "pb_migrations", "pb_public")

app = typer.Typer(no_args_is_help=True, help="Deploys of an instance's code folders")

InstanceArg = Annotated[str, typer.Argument(help="the instance")]


def archive_of(folder: Path) -> tuple[bytes, int]:
    """A tar.gz of the code folders of `folder` (others are left out; links and special
    files too) and the number of files in it."""
    buffer = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in CODE_FOLDERS:
            top = folder / name
            if not top.is_dir() or top.is_symlink():
                continue
            for path in sorted([top, *top.rglob("*")]):
                if path.is_symlink() or not (path.is_dir() or path.is_file()):
                    continue
                info = tar.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isfile():
                    count += 1
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
    return buffer.getvalue(), count


def _show(deploy: dict[str, Any]) -> None:
    started = "" if deploy["started"] else " (instance not running: not started)"
    console.print(
        f"[bold]{deploy['id']}[/] {deploy['status']}: {deploy['file_count']} files, "
        f"{deploy['bytes']} bytes{started}"
    )
    if deploy["message"]:
        console.print(escape(deploy["message"]))


def _print_log(deploy: dict[str, Any]) -> None:
    if deploy.get("log"):
        console.print("[dim]instance log since the deploy:[/]")
        console.print(escape(deploy["log"].rstrip("\n")), highlight=False)


def _fail_with_log(client: ApiClient, name: str, response: Any) -> None:
    message = describe_error(response)
    if response.status_code == 422 and "deploy_failed" in response.text:
        newest = client.http.get(f"/api/instances/{name}/deploys")
        if newest.is_success and newest.json():
            _print_log(newest.json()[0])
    fail(message)


def deploy(
    name: InstanceArg,
    folder: Annotated[
        Path, typer.Argument(help="holds pb_hooks/, pb_migrations/, pb_public/")
    ] = Path("."),
    keep: Annotated[bool, typer.Option(help="keep the instance's files DIR lacks")] = False,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback",
            help="deploy an earlier deploy again: `deploy NAME --rollback [ID]` (the second "
            "argument is then the deploy's id; default: the previous good deploy)",
        ),
    ] = False,
) -> None:
    """Make the instance's code folders equal DIR's, in one switch; a running instance is
    restarted on them and awaited. If it does not start, it goes back to the last good
    deploy and this exits non-zero with the engine's message."""
    client = ApiClient()
    if rollback:
        target = "previous" if folder == Path(".") else str(folder)
        response = client.http.post(f"/api/instances/{name}/deploys/{target}/rollback")
    else:
        if not folder.is_dir():
            fail(f"{folder} is not a folder")
        if not any((folder / code).is_dir() for code in CODE_FOLDERS):
            fail(f"{folder} has none of {', '.join(CODE_FOLDERS)}")
        body, count = archive_of(folder)
        console.print(f"sending {count} files ({len(body)} bytes compressed)")
        response = client.http.post(
            f"/api/instances/{name}/deploys",
            params={"keep": "true"} if keep else None,
            content=body,
            headers={"Content-Type": "application/gzip"},
        )
    if response.status_code == 401:
        fail("not logged in: run `pocketfleet login` (or set PF_TOKEN)")
    if response.is_error:
        _fail_with_log(client, name, response)
    result = response.json()
    _show(result)
    _print_log(result)


@app.command("ls")
def list_deploys(name: InstanceArg) -> None:
    """The instance's deploys, newest first."""
    rows = ApiClient().call("GET", f"/api/instances/{name}/deploys")
    table = Table("id", "created", "status", "files", "bytes", "actor", "rollback of")
    for row in rows:
        table.add_row(
            row["id"],
            row["created"],
            row["status"],
            str(row["file_count"]),
            str(row["bytes"]),
            row["actor"],
            row["rollback_of"] or "",
        )
    console.print(table)
