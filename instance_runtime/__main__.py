"""`python -m instance_runtime serve|superuser upsert ...` without loading the CLI framework.

    python -m instance_runtime serve --dir DIR --http HOST:PORT [--hooksDir H] [--hooksWatch=false]
                                     [--migrationsDir M] [--automigrate=false]
    python -m instance_runtime superuser upsert EMAIL [PASSWORD] --dir DIR

The Python hooks are loaded from `--hooksDir` (default `DIR/../pb_hooks`, as PocketBase's) and
reloaded when they change unless `--hooksWatch=false`. The migrations of `--migrationsDir`
(default `DIR/../pb_migrations`) are applied before serving (one that fails stops the start:
exit status 1, the error on stderr); collection changes through the API write migration files
there unless `--automigrate=false` (PocketBase's flags and defaults).

Without PASSWORD, `superuser upsert` reads it from the variable `PF_SUPERUSER_PASSWORD`, so
that it need not appear on a command line (which other processes can read).

Kept on argparse so that a running instance imports as little as possible (memory, startup).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PASSWORD_ENV = "PF_SUPERUSER_PASSWORD"


def parse_http(value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `:PORT`) -> (host, port); raises ValueError when malformed."""
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"invalid --http address {value!r} (expected HOST:PORT)")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def parse_go_bool(value: str) -> bool:
    """A boolean flag's value as Go's `strconv.ParseBool` reads it."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid boolean value {value!r}")


def hooks_dir_of(data_dir: str, hooks_dir: str) -> Path:
    """`--hooksDir`, or PocketBase's default: `pb_hooks` beside the data folder."""
    return Path(hooks_dir) if hooks_dir else Path(data_dir).absolute().parent / "pb_hooks"


def migrations_dir_of(data_dir: str, migrations_dir: str) -> Path:
    """`--migrationsDir`, or PocketBase's default: `pb_migrations` beside the data folder."""
    if migrations_dir:
        return Path(migrations_dir)
    return Path(data_dir).absolute().parent / "pb_migrations"


def serve(
    data_dir: str,
    http: str,
    hooks_dir: str = "",
    hooks_watch: bool = True,
    migrations_dir: str = "",
    automigrate: bool = True,
) -> None:
    """Serve until stopped; a migration that fails raises `MigrationError` before serving."""
    from instance_runtime.server import serve as run

    host, port = parse_http(http)
    run(
        Path(data_dir),
        host,
        port,
        hooks_dir_of(data_dir, hooks_dir),
        hooks_watch=hooks_watch,
        migrations_dir=migrations_dir_of(data_dir, migrations_dir),
        automigrate_on=automigrate,
    )


def superuser_upsert(email: str, password: str, data_dir: str) -> str:
    """Create or update a superuser in `data_dir`; returns its id; raises `ApiError`."""
    from instance_runtime.core.app import App
    from instance_runtime.core.auth import upsert_superuser

    app = App(Path(data_dir), readers=1)
    try:
        return app.write_sync(lambda conn, schema: upsert_superuser(conn, schema, email, password))
    finally:
        app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instance_runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--dir", required=True)
    p_serve.add_argument("--http", default="127.0.0.1:8090")
    p_serve.add_argument("--hooksDir", default="", help="default: DIR/../pb_hooks")
    p_serve.add_argument("--hooksWatch", nargs="?", const=True, default=True, type=parse_go_bool)
    p_serve.add_argument("--migrationsDir", default="", help="default: DIR/../pb_migrations")
    p_serve.add_argument("--automigrate", nargs="?", const=True, default=True, type=parse_go_bool)
    p_su = sub.add_parser("superuser")
    p_su.add_argument("action", choices=["upsert"])
    p_su.add_argument("email")
    p_su.add_argument("password", nargs="?", help=f"default: ${PASSWORD_ENV}")
    p_su.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        from instance_runtime.core.migrations import MigrationError

        try:
            serve(
                args.dir, args.http, args.hooksDir, args.hooksWatch, args.migrationsDir,
                args.automigrate,
            )  # fmt: skip
        except MigrationError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
        return 0
    from instance_runtime.core.errors import ApiError

    password = args.password if args.password is not None else os.environ.get(PASSWORD_ENV)
    if not password:
        print(f"Error: no password given (argument or ${PASSWORD_ENV})", file=sys.stderr)
        return 2
    try:
        rid = superuser_upsert(args.email, password, args.dir)
    except ApiError as exc:
        print(f"Error: {exc.message} {exc.data}", file=sys.stderr)
        return 1
    print(f'Successfully saved superuser "{args.email}" ({rid})!')
    return 0


if __name__ == "__main__":
    sys.exit(main())
