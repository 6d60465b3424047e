"""Migrations on both engines: one folder of migrations written twice (tests/conformance/
migrations/pocketbase/*.js for PocketBase, pocketfleet/*.py for ours, the same steps: an auth
collection, a collection with a relation to it, a field and an index added, records inserted)
applied when each engine starts, then `migrate down 2` on each, the two reverted files removed
(`serve` would apply them again) and a restart. After each, the
engines must show the same collections and records through the JS SDK (scenarios in
tests/js/conformance/migrations.mjs, normalised as the harness does) and have the same files in
`_migrations` (PocketBase's own `.go` system migrations aside, extensions aside)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conformance.harness import (
    CANDIDATE,
    EMAIL,
    PASSWORD,
    REFERENCE,
    Trace,
    difference,
    normalise,
    run_scenario,
    surprises_report,
)
from tests.conformance.scenarios import MIGRATIONS
from tests.support.engines import POCKETBASE, POCKETFLEET, Engine, EngineProcess, start_engine

SOURCES = Path(__file__).resolve().parent / "migrations"
APPLIED, REVERTED = MIGRATIONS
ENGINES: tuple[Engine, Engine] = (REFERENCE, CANDIDATE)
REVERT = 2


@dataclass
class Runs:
    traces: dict[str, dict[str, Trace]] = field(default_factory=dict)  # scenario -> engine ->
    recorded: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # scenario -> engine ->
    down_output: dict[str, list[str]] = field(default_factory=dict)
    folders_after: dict[str, list[str]] = field(default_factory=dict)


def recorded(root: Path) -> list[str]:
    """The migrations `_migrations` lists, without PocketBase's system ones and extensions."""
    with sqlite3.connect(root / "pb_data" / "data.db") as conn:
        rows = [str(r[0]) for r in conn.execute("SELECT file FROM _migrations ORDER BY file")]
    return [Path(f).stem for f in rows if not f.endswith(".go")]


def folder(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "pb_migrations").iterdir())


def migrate_down(engine: Engine, root: Path, count: int) -> list[str]:
    """`migrate down COUNT` (confirmed), what it printed with the extensions made alike."""
    dirs = ["--dir", str(root / "pb_data"), "--migrationsDir", str(root / "pb_migrations")]
    if engine == REFERENCE:
        argv = [str(POCKETBASE), "migrate", "down", str(count), *dirs]
    else:
        argv = [str(POCKETFLEET), "runtime", "migrate", "down", str(count), *dirs]
    done = subprocess.run(
        argv, input="y\n", capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, f"{engine} migrate down: {done.stdout} {done.stderr}"
    return [line.rsplit(".", 1)[0] for line in done.stdout.strip().splitlines()]


def start(roots: dict[Engine, Path]) -> dict[Engine, EngineProcess]:
    started: dict[Engine, EngineProcess] = {}
    try:
        for engine, root in roots.items():
            started[engine] = start_engine(engine, root, EMAIL, PASSWORD)
    except BaseException:
        for running in started.values():
            running.stop()
        raise
    return started


def run(scenario: str, roots: dict[Engine, Path], runs: Runs) -> None:
    engines = start(roots)
    try:
        runs.traces[scenario] = run_scenario(scenario, {e: p.url for e, p in engines.items()})
    finally:
        for engine in engines.values():
            engine.stop()
    runs.recorded[scenario] = {engine: recorded(root) for engine, root in roots.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("migrations")
    roots: dict[Engine, Path] = {engine: base / engine for engine in ENGINES}
    for engine, root in roots.items():
        shutil.copytree(SOURCES / engine, root / "pb_migrations")
    result = Runs()
    run(APPLIED, roots, result)
    result.down_output = {
        engine: migrate_down(engine, root, REVERT) for engine, root in roots.items()
    }
    for root in roots.values():  # else `serve` applies them again (as it does on both engines)
        for name in folder(root)[-REVERT:]:
            (root / "pb_migrations" / name).unlink()
    run(REVERTED, roots, result)
    result.folders_after = {engine: folder(root) for engine, root in roots.items()}
    yield result


def sources(engine: Engine) -> list[str]:
    return sorted(p.stem for p in (SOURCES / engine).iterdir())


def test_both_folders_hold_the_same_migrations() -> None:
    assert sources(REFERENCE) == sources(CANDIDATE)
    assert len(sources(REFERENCE)) > REVERT


@pytest.mark.parametrize("scenario", MIGRATIONS)
def test_the_scenarios_hold_on_pocketbase(runs: Runs, scenario: str) -> None:
    report = surprises_report(scenario, REFERENCE, runs.traces[scenario][REFERENCE])
    assert report is None, report


@pytest.mark.parametrize("scenario", MIGRATIONS)
def test_our_engine_shows_what_pocketbase_shows(runs: Runs, scenario: str) -> None:
    traces = runs.traces[scenario]
    report = difference(scenario, normalise(traces[REFERENCE]), normalise(traces[CANDIDATE]))
    assert report is None, report


def test_the_same_migrations_are_recorded(runs: Runs) -> None:
    every = sources(REFERENCE)
    assert runs.recorded[APPLIED] == {REFERENCE: every, CANDIDATE: every}
    kept = every[:-REVERT]
    assert runs.recorded[REVERTED] == {REFERENCE: kept, CANDIDATE: kept}


def test_migrate_down_reverts_the_same_ones(runs: Runs) -> None:
    expected = [f"Reverted {name}" for name in reversed(sources(REFERENCE)[-REVERT:])]
    assert runs.down_output == {REFERENCE: expected, CANDIDATE: expected}


def test_neither_engine_wrote_a_migration_of_its_own(runs: Runs) -> None:
    """Migrations and reads change no collection through the API: automigrate stays silent."""
    for engine in ENGINES:
        kept = sorted(p.name for p in (SOURCES / engine).iterdir())[:-REVERT]
        assert runs.folders_after[engine] == kept
