"""`pocketfleet deploy NAME [DIR]` and `pocketfleet deploys ls NAME`: deploys of an instance's
code folders (`pb_hooks/`, `pb_migrations/`, `pb_public/` of DIR), with their history and
rollback. Works unattended with only `PF_URL` and `PF_TOKEN` set.

A deploy hashes DIR's files, asks the control plane which contents the instance lacks (`POST
.../deploys/plan`) and sends one tar.gz of those alone, with the manifest of all of them
(`control_plane.deploys.manifest`). `--watch` deploys again on every change in DIR."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.markup import escape
from rich.table import Table

from control_plane.cli.client import ApiClient, console, describe_error, err_console, fail
from control_plane.deploys.manifest import MANIFEST_MEMBER

CODE_FOLDERS = ("pb_hooks", "pb_migrations", "pb_public")
CHUNK = 1 << 20
WATCH_DEBOUNCE_MS = 300

app = typer.Typer(no_args_is_help=True, help="Deploys of an instance's code folders")

InstanceArg = Annotated[str, typer.Argument(help="the instance")]


class DeployError(Exception):
    """A deploy that did not happen or failed; the message is for the user."""


@dataclass
class LocalTree:
    """DIR's code files by relative path (`pb_public/index.html`) with their sha256, and its
    folders (kept even when empty). Links and special files are left out."""

    files: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> dict[str, Any]:
        return {"files": self.files, "folders": self.folders}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(CHUNK):
            digest.update(piece)
    return digest.hexdigest()


def local_tree(folder: Path) -> LocalTree:
    tree = LocalTree()
    for name in CODE_FOLDERS:
        top = folder / name
        if not top.is_dir() or top.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(top):  # links to folders: not entered
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
            tree.folders.append(here.relative_to(folder).as_posix())
            for filename in sorted(filenames):
                path = here / filename
                if path.is_symlink() or not path.is_file():
                    continue
                rel = path.relative_to(folder).as_posix()
                tree.files[rel] = _sha256(path)
                tree.paths[rel] = path
    return tree


def archive_of(tree: LocalTree, contents: Iterable[str] | None = None) -> tuple[bytes, int]:
    """A tar.gz of the manifest and of the files holding `contents` (sha256; None: all),
    each content once; and how many files it carries."""
    wanted = None if contents is None else set(contents)
    buffer = io.BytesIO()
    sent: set[str] = set()
    # zlib's usual level 6: nearly level 9's size at a fraction of its time
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        declared = orjson.dumps(tree.manifest)
        info = tarfile.TarInfo(MANIFEST_MEMBER)
        info.size = len(declared)
        tar.addfile(info, io.BytesIO(declared))
        for rel in tree.folders:
            info = tarfile.TarInfo(rel)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for rel, digest in tree.files.items():
            if digest in sent or (wanted is not None and digest not in wanted):
                continue
            sent.add(digest)
            path = tree.paths[rel]
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue(), len(sent)


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


def _refusal(client: ApiClient, name: str, response: httpx.Response) -> DeployError:
    if response.status_code == 401:
        return DeployError("not logged in: run `pocketfleet login` (or set PF_TOKEN)")
    if response.status_code == 422 and "deploy_failed" in response.text:
        newest = client.http.get(f"/api/instances/{name}/deploys")
        if newest.is_success and newest.json():
            _print_log(newest.json()[0])
    return DeployError(describe_error(response))


def _plan(client: ApiClient, name: str, tree: LocalTree, keep: bool) -> dict[str, Any]:
    response = client.http.post(
        f"/api/instances/{name}/deploys/plan", json={**tree.manifest, "keep": keep}
    )
    if response.is_error:
        raise _refusal(client, name, response)
    plan: dict[str, Any] = response.json()
    return plan


def deploy_folder(client: ApiClient, name: str, folder: Path, *, keep: bool) -> dict[str, Any]:
    """Deploy `folder` to `name`, sending only what the instance lacks; the deploy, or {}
    when nothing changed. Raises `DeployError`."""
    if not folder.is_dir():
        raise DeployError(f"{folder} is not a folder")
    if not any((folder / code).is_dir() for code in CODE_FOLDERS):
        raise DeployError(f"{folder} has none of {', '.join(CODE_FOLDERS)}")
    tree = local_tree(folder)
    for attempt in range(2):
        plan = _plan(client, name, tree, keep)
        if not (plan["added"] or plan["changed"] or plan["removed"]) and attempt == 0:
            console.print(f"nothing changed: the instance has these {len(tree.files)} files")
            return {}
        body, count = archive_of(tree, plan["missing"] if attempt == 0 else None)
        removed = plan["removed"]
        console.print(
            f"sending {count} of {len(tree.files)} files ({len(body)} bytes compressed); "
            f"{plan['unchanged']} unchanged, {len(plan['changed'])} changed, "
            f"{len(plan['added'])} new, {len(removed)} removed"
            + (f": {', '.join(removed[:5])}{' ...' if len(removed) > 5 else ''}" if removed else "")
        )
        response = client.http.post(
            f"/api/instances/{name}/deploys",
            params={"keep": "true"} if keep else None,
            content=body,
            headers={"Content-Type": "application/gzip"},
        )
        if response.status_code == 409 and "stale_plan" in response.text and attempt == 0:
            console.print("the instance's files changed meanwhile: sending everything")
            continue
        if response.is_error:
            raise _refusal(client, name, response)
        result: dict[str, Any] = response.json()
        return result
    raise AssertionError("unreachable")


def _report(result: dict[str, Any]) -> None:
    if result:
        _show(result)
        _print_log(result)


def _watch(client: ApiClient, name: str, folder: Path, keep: bool) -> None:
    """Deploy again after every change below `folder` (until Ctrl-C); failures are shown and
    the watch goes on."""
    from watchfiles import watch  # imported here: only `--watch` needs it

    console.print(f"watching {folder} (Ctrl-C to stop)")
    for _changes in watch(folder, debounce=WATCH_DEBOUNCE_MS, raise_interrupt=False):
        try:
            _report(deploy_folder(client, name, folder, keep=keep))
        except DeployError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}")
        except httpx.HTTPError as err:
            err_console.print(f"[bold red]error:[/] cannot reach {client.url} ({err})")


def deploy(
    name: InstanceArg,
    folder: Annotated[
        Path, typer.Argument(help="holds pb_hooks/, pb_migrations/, pb_public/")
    ] = Path("."),
    keep: Annotated[bool, typer.Option(help="keep the instance's files DIR lacks")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="deploy again on every change in DIR")
    ] = False,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback",
            help="deploy an earlier deploy again: `deploy NAME --rollback [ID]` (the second "
            "argument is then the deploy's id; default: the previous good deploy)",
        ),
    ] = False,
) -> None:
    """Make the instance's code folders equal DIR's, in one switch, sending only what
    changed; a running instance is restarted on them and awaited. If it does not start, it
    goes back to the last good deploy and this exits non-zero with the engine's message."""
    client = ApiClient()
    if rollback:
        target = "previous" if folder == Path(".") else str(folder)
        response = client.http.post(f"/api/instances/{name}/deploys/{target}/rollback")
        if response.is_error:
            fail(str(_refusal(client, name, response)))
        _report(response.json())
        return
    try:
        _report(deploy_folder(client, name, folder, keep=keep))
    except DeployError as err:
        if not watch:
            fail(str(err))
        err_console.print(f"[bold red]error:[/] {escape(str(err))}")
    if watch:
        _watch(client, name, folder, keep)


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
