"""The `pocketfleet` engine: our own runtime (`instance_runtime`), always installed.

Its only version is the installed pocketfleet distribution's; it runs as
`sys.executable -m instance_runtime serve --dir PB_DATA --http 127.0.0.1:PORT` (the runtime
imports nothing of the control plane) and answers health on `/api/health`.
"""

from __future__ import annotations

import sys
from importlib import metadata

from control_plane.engines.base import Engine, EngineError, InstanceLayout

ENGINE_NAME = "pocketfleet"


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
        ]

    def zygote_command(self, version: str) -> list[str] | None:
        """`python -m instance_runtime.zygote`: forks instances with the runtime imported."""
        self.require(version)
        return [self.python, "-m", "instance_runtime.zygote"]

    def superuser_command(
        self, version: str, layout: InstanceLayout, email: str, password: str
    ) -> list[str]:
        self.require(version)
        return [
            self.python,
            "-m",
            "instance_runtime",
            "superuser",
            "upsert",
            email,
            password,
            "--dir",
            str(layout.data_dir.absolute()),
        ]


__all__ = ["ENGINE_NAME", "EngineError", "PocketfleetEngine", "package_version"]
