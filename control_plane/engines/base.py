"""The `Engine` seam: how to run one kind of PocketBase-compatible server.

An engine knows three things and nothing else in the system knows them: the command line that
serves an instance (and the one that upserts a superuser), the health URL, and the data layout
inside the instance folder. Drivers run whatever command an engine builds; the proxy only sees
a port.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class EngineError(Exception):
    """An engine or version is unknown, not installed, or could not be installed."""


@dataclass(frozen=True)
class InstanceLayout:
    """The folder of one instance: `ROOT/{pb_data,pb_migrations,pb_hooks,pb_public}` + logs."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "pb_data"

    @property
    def migrations_dir(self) -> Path:
        return self.root / "pb_migrations"

    @property
    def hooks_dir(self) -> Path:
        return self.root / "pb_hooks"

    @property
    def public_dir(self) -> Path:
        return self.root / "pb_public"

    @property
    def log_file(self) -> Path:
        return self.root / "output.log"

    def folders(self) -> tuple[Path, ...]:
        return (self.data_dir, self.migrations_dir, self.hooks_dir, self.public_dir)


@dataclass(frozen=True)
class EngineTask:
    """A one-off command of an engine: its argv and variables it needs beside the instance's
    (passed in the instance's environment, never on a command line)."""

    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)


class Engine(ABC):
    """Contract:

    - `serve_command` returns an argv that serves the instance on `127.0.0.1:port` until SIGTERM,
      using only the folders of `layout` (every path passed explicitly), and exits cleanly on
      SIGTERM (databases checkpointed).
    - `health_path` answers 200 once the server accepts requests.
    - `superuser_task` returns a command (argv and extra environment) that creates or updates
      a superuser and exits 0; engines that can take the password from the environment keep
      it off the argv, which other processes may read.
    - `installed_versions` lists the versions `serve_command` can run now; `install` makes one
      more available (idempotent) or raises `EngineError`.
    """

    name: str
    health_path: str = "/api/health"
    admin_path: str = "/_/"

    @abstractmethod
    def default_version(self) -> str: ...

    @abstractmethod
    def installed_versions(self) -> list[str]: ...

    @abstractmethod
    def install(self, version: str) -> None: ...

    @abstractmethod
    def serve_command(self, version: str, layout: InstanceLayout, port: int) -> list[str]: ...

    @abstractmethod
    def superuser_task(
        self, version: str, layout: InstanceLayout, email: str, password: str
    ) -> EngineTask: ...

    def is_installed(self, version: str) -> bool:
        return version in self.installed_versions()

    @abstractmethod
    def runtime_paths(self, version: str) -> list[Path]:
        """The host files and folders `serve_command` and `superuser_task` need to read
        (the binary, or the interpreter and its libraries), absolute. An instance's sandbox
        shows these read-only and nothing else of the host besides `/usr` and a few files of
        `/etc` (`control_plane.drivers.sandbox`); nothing in them may be secret."""

    def prepare(self, version: str, layout: InstanceLayout) -> list[Path]:
        """Write what the engine wants in the instance's folders before a start; return the
        files it created (the driver hands them to the instance's user). Called by the driver
        on every start once the folders exist: blocking, idempotent, and cheap when there is
        nothing to do (it is on the wake path). Default: nothing."""
        return []

    def writes_itself(self, rel: str) -> bool:
        """Whether `rel` (a path below the instance's root, `pb_migrations/...`) is a file
        `prepare` writes: the platform's, not the tenant's. Deploys do not count it as
        something to remove (it is written again at the next start). Default: none."""
        return False

    # Whether instances of this engine report their own activity on the socket named by
    # `PF_ACTIVITY_SOCKET` in their environment (`control_plane.activity_reports`).
    reports_activity: bool = False

    # Whether instances of this engine stop checkpointing their databases when
    # `PF_CHECKPOINTS=external` is in their environment (set while Litestream replicates them,
    # which checkpoints): engines built on a SQLite older than 3.51.3 must, as their
    # checkpoints racing Litestream's can corrupt a database (SQLite's "WAL-reset" bug).
    leaves_checkpoints: bool = False

    def zygote_command(self, version: str) -> list[str] | None:
        """The argv of this engine's zygote for `version` (a process that has loaded the
        engine and forks a child running `serve_command` on request, see
        `control_plane.drivers.zygote`), or None: instances start cold. Default: None."""
        return None

    def admin_auth_storage(self, token: str, record: Mapping[str, object]) -> dict[str, str]:
        """The `localStorage` entries that sign a browser into the admin UI at `admin_path`
        with a superuser `token` and `record` (as `auth-with-password` returns them).

        PocketBase's admin UI keeps its auth as the JS SDK's `LocalAuthStore` does:
        `{"token": ..., "record": ...}` under `__pb_superusers__` + the UI's path without its
        final slash (0.40: `__pb_superusers__/_`), and under `__pb_superuser_auth__` in
        0.23-0.28. Both are written, so every version finds its own.
        """
        value = json.dumps({"token": token, "record": dict(record)})
        path = self.admin_path.rstrip("/")
        return {f"__pb_superusers__{path}": value, "__pb_superuser_auth__": value}

    def databases(self, layout: InstanceLayout) -> list[Path]:
        """The SQLite databases (WAL mode) of an instance, existing or not yet created: what
        backups copy with SQLite's backup API and what Litestream replicates. Every other file
        of the instance folder is copied as it is."""
        return [layout.data_dir / "data.db", layout.data_dir / "auxiliary.db"]

    def require(self, version: str) -> None:
        if not self.is_installed(version):
            raise EngineError(f"{self.name} {version} is not installed")
