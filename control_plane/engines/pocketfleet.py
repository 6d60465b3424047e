"""The `pocketfleet` engine: our own runtime (`instance_runtime`), always installed.

Its only version is the installed pocketfleet distribution's; it runs as
`sys.executable -m instance_runtime serve --dir PB_DATA --http 127.0.0.1:PORT --hooksDir PB_HOOKS
--migrationsDir PB_MIGRATIONS` (the runtime imports nothing of the control plane; its Python
hooks and migrations are the instance's `pb_hooks/*.py` and `pb_migrations/*.py`, inside the
instance folder its sandbox shows) and answers health on `/api/health`.
"""

from __future__ import annotations

import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import instance_runtime
from control_plane.engines.base import Engine, EngineError, EngineTask, InstanceLayout

ENGINE_NAME = "pocketfleet"
PASSWORD_ENV = "PF_SUPERUSER_PASSWORD"  # read by `instance_runtime superuser upsert`


def package_version() -> str:
    """The installed pocketfleet version (`0.0.0` when running from an uninstalled tree)."""
    try:
        return metadata.version("pocketfleet")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class PocketfleetEngine(Engine):
    """See the module docstring."""

    name = ENGINE_NAME
    health_path = "/api/health"
    reports_activity = True  # instance_runtime.activity
    leaves_checkpoints = True  # instance_runtime.core.db: Python's sqlite3 may predate 3.51.3

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self.version = package_version()

    def default_version(self) -> str:
        return self.version

    def installed_versions(self) -> list[str]:
        return [self.version]

    def install(self, version: str) -> None:
        """Only the running distribution's version exists; any other is an `EngineError`."""
        self.require(version)

    def serve_command(self, version: str, layout: InstanceLayout, port: int) -> list[str]:
        self.require(version)
        return [
            self.python,
            "-m",
            "instance_runtime",
            "serve",
            "--dir",
            str(layout.data_dir.absolute()),
            "--http",
            f"127.0.0.1:{port}",
            "--hooksDir",
            str(layout.hooks_dir.absolute()),
            "--migrationsDir",
            str(layout.migrations_dir.absolute()),
        ]

    def runtime_paths(self, version: str) -> list[Path]:
        """The interpreter's installation, the virtual environment it runs in, and the runtime's
        own package (which an editable install keeps outside both); none of them secret."""
        paths = {
            Path(sys.base_prefix),
            Path(sys.prefix),
            Path(sysconfig.get_paths()["purelib"]),
            Path(self.python).parent,
            Path(instance_runtime.__file__).parent,
        }
        found = {path.resolve() for path in paths} | {path.absolute() for path in paths}
        return sorted(path for path in found if path.exists())

    def zygote_command(self, version: str) -> list[str] | None:
        """`python -m instance_runtime.zygote`: forks instances with the runtime imported."""
        self.require(version)
        return [self.python, "-m", "instance_runtime.zygote"]

    def superuser_task(
        self, version: str, layout: InstanceLayout, email: str, password: str
    ) -> EngineTask:
        """`python -m instance_runtime superuser upsert --dir DIR -- EMAIL`, the password in
        `PF_SUPERUSER_PASSWORD` (never on the command line); after `--`, an email starting
        with `-` is not taken for an option."""
        self.require(version)
        argv = [self.python, "-m", "instance_runtime", "superuser", "upsert"]
        argv += ["--dir", str(layout.data_dir.absolute()), "--", email]
        return EngineTask(argv, {PASSWORD_ENV: password})


__all__ = ["ENGINE_NAME", "EngineError", "PocketfleetEngine", "package_version"]
