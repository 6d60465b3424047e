"""A real, throwaway PostgreSQL server for a test session.

    with PostgresServer() as pg:
        url = pg.create_database("control")  # postgresql+asyncpg://postgres@127.0.0.1:PORT/control

The server binaries come from Debian's ``postgresql`` package (installed by
``scripts/install-system.sh``). When the tests run as root, the cluster is created and run as
the ``postgres`` system user, because ``initdb`` and ``postgres`` refuse to run as root.
Durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``) for speed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from .ports import free_port

POSTGRES_ROOT = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_bin_dir(root: Path = POSTGRES_ROOT) -> Path:
    """The ``bin`` folder of the newest PostgreSQL under ``root`` (e.g. /usr/lib/postgresql/15)."""
    found = [initdb.parent for initdb in root.glob("*/bin/initdb")]
    if not found:
        raise RuntimeError(f"no PostgreSQL under {root}: run scripts/install-system.sh")
    return max(found, key=lambda bin_dir: _version_key(bin_dir.parent.name))


def scratch_root() -> Path:
    """/dev/shm when it is a roomy memory file system (initdb is ~3x faster there), else /tmp.

    Both are world-traversable, as the ``postgres`` user needs.
    """
    shm = Path("/dev/shm")
    try:
        roomy = shutil.disk_usage(shm).free >= 1 << 30 and os.access(shm, os.W_OK)
    except OSError:
        roomy = False
    return shm if roomy else Path("/tmp")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only."""

    def __init__(self, bin_dir: Path | None = None, root: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.root = root or scratch_root()
        self.port = 0
        self._base: Path | None = None

    @property
    def running(self) -> bool:
        return self._base is not None

    def start(self, attempts: int = 3) -> None:
        """Create the cluster and start the server; retry on another port if one was taken."""
        if self.running:
            return
        base = Path(tempfile.mkdtemp(prefix="pf-postgres-", dir=self.root))
        self._base = base
        atexit.register(self.stop)
        try:
            (base / "sock").mkdir()
            if os.geteuid() == 0:
                shutil.chown(base, SYSTEM_USER, SYSTEM_USER)
                shutil.chown(base / "sock", SYSTEM_USER, SYSTEM_USER)
            self._run(
                "initdb",
                *("-D", str(base / "data"), "-A", "trust", "-U", "postgres"),
                *("-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"),
            )
            for attempt in range(attempts):
                self.port = free_port()
                try:
                    self._pg_ctl_start(base)
                    return
                except RuntimeError:
                    if attempt == attempts - 1:
                        raise
        except BaseException:
            self.stop()
            raise

    def _pg_ctl_start(self, base: Path) -> None:
        options = (
            f"-k {base / 'sock'} -c listen_addresses=127.0.0.1 -p {self.port}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = base / "postgres.log"
        try:
            self._run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                *("-D", str(base / "data"), "-l", str(log), "-o", options),
            )
        except RuntimeError as err:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{err}\n--- postgres.log ---\n{tail}") from err

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``) and remove its folder. Safe to repeat."""
        base, self._base = self._base, None
        atexit.unregister(self.stop)
        if base is None:
            return
        if (base / "data" / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):  # already gone: the folder goes anyway
                self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(base / "data"))
        shutil.rmtree(base, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        """A libpq / asyncpg URL for ``database``."""
        if not self.running:
            raise RuntimeError("PostgresServer is not running")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy async URL (asyncpg driver)."""
        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}: use [a-z_][a-z0-9_]*")
        dsn = self.dsn(name)
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if os.geteuid() == 0 and tool in ("initdb", "pg_ctl"):
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        result = subprocess.run(
            command, cwd=self._base or "/", capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise RuntimeError(f"{tool} failed ({result.returncode}): {output}")

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
