"""`pocketfleet runtime ...`: serve one pocketfleet-engine instance, upsert a superuser, migrate.

`migrate up | down [N] | create NAME | collections | history-sync` are PocketBase's `migrate`
(see `core.migrations`, `core.automigrate`): `down` reverts the last N applied migrations
(default 1, negative: all) and, like `create` and `collections`, asks first (y/N on stdin, no
answer cancels). Each takes `--dir` and `--migrationsDir` (default `DIR/../pb_migrations`).

The typer sub-app is added to the `pocketfleet` command by `control_plane.cli`; the runtime
itself is imported only when a command runs, so the CLI stays fast.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from instance_runtime.core.app import App
    from instance_runtime.core.migrations import Runner

app = typer.Typer(
    no_args_is_help=True,
    help="Run pocketfleet's own PocketBase-compatible engine (like `pocketbase`).",
)
superuser_app = typer.Typer(no_args_is_help=True, help="Manage superusers of an instance.")
app.add_typer(superuser_app, name="superuser")
migrate_app = typer.Typer(
    no_args_is_help=True, help="Apply, revert or write migrations (like `pocketbase migrate`)."
)
app.add_typer(migrate_app, name="migrate")

_DIR = typer.Option(Path("pb_data"), "--dir", help="The data folder (data.db).")
_MIGRATIONS_DIR = typer.Option(
    "", "--migrationsDir", help="The migrations folder (default: DIR/../pb_migrations)."
)


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
    migrations_dir: str = _MIGRATIONS_DIR,
    automigrate: bool = typer.Option(
        True,
        "--automigrate/--no-automigrate",
        help="Write a migration file for every collection change made through the API.",
    ),
) -> None:
    """Apply the migrations, then serve one instance from DIR on HOST:PORT until SIGTERM."""
    from instance_runtime.__main__ import hooks_dir_of, migrations_dir_of, parse_http
    from instance_runtime.core.migrations import MigrationError
    from instance_runtime.server import serve as run

    try:
        host, port = parse_http(http)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--http") from err
    try:
        run(
            dir,
            host,
            port,
            hooks_dir_of(str(dir), hooks_dir),
            hooks_watch=hooks_watch,
            migrations_dir=migrations_dir_of(str(dir), migrations_dir),
            automigrate_on=automigrate,
        )
    except MigrationError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc


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


# ------------------------------------------------------------------------------------ migrate
def _confirm(message: str) -> bool:
    """PocketBase's yes/no prompt (default no; an empty answer or no input cancels)."""
    while True:
        typer.echo(f"{message} (y/N) ", err=True, nl=False)
        answer = sys.stdin.readline().strip().lower()
        if answer in ("", "n", "no"):
            return False
        if answer in ("y", "yes"):
            return True


@contextmanager
def _runner(dir: Path, migrations_dir: str) -> Iterator[tuple[Runner, App, Path]]:
    """The instance's runtime (opened, closed after) and a runner over the folder's migrations;
    a migration that fails to load, apply or revert ends the command with its error."""
    from instance_runtime.__main__ import migrations_dir_of
    from instance_runtime.core.app import App
    from instance_runtime.core.migrations import MigrationError, Runner, load

    folder = migrations_dir_of(str(dir), migrations_dir)
    try:
        migrations = load(folder)
    except MigrationError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    runtime = App(dir, readers=1)
    try:
        yield Runner(runtime, migrations), runtime, folder
    except MigrationError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        runtime.close()


@migrate_app.command("up")
def migrate_up(dir: Path = _DIR, migrations_dir: str = _MIGRATIONS_DIR) -> None:
    """Apply every migration not applied yet (all or none of them)."""
    with _runner(dir, migrations_dir) as (runner, _runtime, _folder):
        applied = runner.up()
    for file in applied:
        typer.echo(f"Applied {file}")
    if not applied:
        typer.echo("No new migrations to apply.")


@migrate_app.command("down", context_settings={"ignore_unknown_options": True})
def migrate_down(
    count: str = typer.Argument("1", help="How many to revert (negative: all)."),
    dir: Path = _DIR,
    migrations_dir: str = _MIGRATIONS_DIR,
) -> None:
    """Revert the last COUNT applied migrations (default 1), latest first."""
    try:
        number = int(count)
    except ValueError as err:
        raise typer.BadParameter(f"{count!r} is not a whole number", param_hint="N") from err
    with _runner(dir, migrations_dir) as (runner, _runtime, _folder):
        if number < 0:  # all of them (PocketBase counts every loaded migration)
            number = len(runner.migrations)
        names = runner.last_applied(number)
        if not names:
            typer.echo("No migrations to revert.")
            return
        shown = "\n".join(names)
        question = (
            f"\n{shown}\nDo you really want to revert the last {number} applied migration(s)?"
        )
        if not _confirm(question):
            typer.echo("The command has been cancelled")
            return
        reverted = runner.down(number)
    for file in reverted:
        typer.echo(f"Reverted {file}")


def _write_confirmed(path: Path, write: Callable[[], Path]) -> None:
    if not _confirm(f"Do you really want to create migration {json.dumps(str(path))}?"):
        typer.echo("The command has been cancelled")
        return
    typer.echo(f"Successfully created file {json.dumps(str(write()))}")  # Go's %q


@migrate_app.command("create")
def migrate_create(
    name: str = typer.Argument(..., help="The migration's name (snake_cased into the file's)."),
    dir: Path = _DIR,
    migrations_dir: str = _MIGRATIONS_DIR,
) -> None:
    """Write a blank migration `<unix-ts>_<name>.py` (up and down to fill in)."""
    from instance_runtime.__main__ import migrations_dir_of
    from instance_runtime.core import automigrate

    folder = migrations_dir_of(str(dir), migrations_dir)
    now = int(time.time())
    planned = automigrate.file_path(folder, name, now)
    _write_confirmed(planned, lambda: automigrate.create_file(folder, name, now=now))


@migrate_app.command("collections")
def migrate_collections(dir: Path = _DIR, migrations_dir: str = _MIGRATIONS_DIR) -> None:
    """Write a migration with a snapshot of every collection (recreates them when applied)."""
    from instance_runtime.core import automigrate

    with _runner(dir, migrations_dir) as (_, runtime, folder):
        now = int(time.time())
        planned = automigrate.file_path(folder, automigrate.SNAPSHOT_NAME, now)
        _write_confirmed(planned, lambda: automigrate.snapshot_file(runtime, folder, now=now))


@migrate_app.command("history-sync")
def migrate_history_sync(dir: Path = _DIR, migrations_dir: str = _MIGRATIONS_DIR) -> None:
    """Forget the applied migrations whose files are gone."""
    with _runner(dir, migrations_dir) as (runner, _runtime, _folder):
        runner.history_sync()
    typer.echo("The _migrations table was synced with the available migrations.")
