"""`pocketfleet runtime ...`: serve one pocketfleet-engine instance, upsert a superuser.

The typer sub-app is added to the `pocketfleet` command by `control_plane.cli`; the runtime
itself is imported only when a command runs, so the CLI stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Run pocketfleet's own PocketBase-compatible engine (like `pocketbase`).",
)
superuser_app = typer.Typer(no_args_is_help=True, help="Manage superusers of an instance.")
app.add_typer(superuser_app, name="superuser")


@app.command()
def serve(
    dir: Path = typer.Option(Path("pb_data"), "--dir", help="The data folder (data.db)."),
    http: str = typer.Option("127.0.0.1:8090", "--http", help="HOST:PORT to listen on."),
    hooks_dir: str = typer.Option(
        "", "--hooksDir", help="The Python hooks folder (default: DIR/../pb_hooks)."
    ),
    hooks_watch: bool = typer.Option(
        True, "--hooksWatch/--no-hooksWatch", help="Reload the hooks when they change."
    ),
) -> None:
    """Serve one instance from DIR on HOST:PORT until SIGTERM/Ctrl-C."""
    from instance_runtime.__main__ import hooks_dir_of, parse_http
    from instance_runtime.server import serve as run

    try:
        host, port = parse_http(http)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--http") from err
    run(dir, host, port, hooks_dir_of(str(dir), hooks_dir), hooks_watch=hooks_watch)


@superuser_app.command("upsert")
def superuser_upsert(
    email: str,
    password: str,
    dir: Path = typer.Option(Path("pb_data"), "--dir", help="The data folder (data.db)."),
) -> None:
    """Create or update the superuser EMAIL with PASSWORD."""
    from instance_runtime.__main__ import superuser_upsert as upsert
    from instance_runtime.core.errors import ApiError

    try:
        rid = upsert(email, password, str(dir))
    except ApiError as exc:
        typer.echo(f"Error: {exc.message} {exc.data}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f'Successfully saved superuser "{email}" ({rid})!')
