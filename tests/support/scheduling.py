"""How the suite is spread over pytest-xdist's workers (`make test`: `-n N --dist loadfile`).

Work units. A unit is a test file (its module-scoped servers start once, on one worker), or a
whole folder of `SHARED_FOLDERS`, whose conftest starts one server for all of its files
(tests/security: a "package" fixture, which a folder without `__init__.py` gives the session's
lifetime): one worker then runs every file of it and starts that server once, instead of every
worker that gets one of its files starting its own, kept until the end of the run. And a file
parametrised over the control database (the module-scoped `backend` of tests/conftest.py,
whose id comes first: `test_x[postgres-...]`) is a unit per database: each has its own
module-scoped server anyway, and the two can run on two workers at once.

Order. Longest first (longest-processing-time scheduling): the run then ends with short units
on every worker instead of waiting for a long one begun last. How long a unit takes comes from
the last run in this clone (`unit-seconds` in pytest's cache, written after every run), else,
on a fresh clone, from `MEASURED`. Units known to neither (new files) come after the known slow
ones and before the known short ones, in collection order.

xdist's own `loadfile` would sort files by their number of tests (one schemathesis test of
100 s last) and split tests/security over workers; `UnitScheduling` is `loadfile` with these
units and this order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

SHARED_FOLDERS = ("tests/security",)
# a test over one control database (the conftest's `backend`, its id first): see the docstring
_DATABASE_PARAM = re.compile(r"[^\[]*\[(sqlite|postgres)[-\]]")
CACHE_KEY = "pocketfleet/unit-seconds"
WORKERINPUT_KEY = "pocketfleet_unit_seconds"
SLOW_S = 15.0  # a unit known to take longer starts before the unknown ones

# Seconds per unit (setup, calls and teardown of its tests on one of 3 workers), measured by a
# whole `make test` on a quiet 2-core machine on 2026-12-03: units of SLOW_S and more. Only the
# order matters: a fresh clone's (later runs sort by their own cache).
MEASURED: Mapping[str, float] = {
    "tests/control_plane/api/test_openapi_fuzz.py": 100,
    "tests/control_plane/backups/test_backups.py": 78,
    "tests/bench/test_density_small.py": 72,
    "tests/control_plane/api/test_jobs.py": 71,
    "tests/conformance/test_conformance_auth_otp.py": 54,
    "tests/control_plane/backups/test_hostile_folders.py": 52,
    "tests/control_plane/api/test_deploys.py": 51,
    "tests/conformance/test_conformance_auth_email.py": 45,
    "tests/control_plane/test_realtime_through_proxies.py": 43,
    "tests/control_plane/api/test_fleet_limits.py[sqlite]": 43,
    "tests/security": 40,
    "tests/control_plane/api/test_instances.py[sqlite]": 38,
    "tests/control_plane/cli/test_cli.py": 35,
    "tests/control_plane/test_hibernation.py": 34,
    "tests/control_plane/sftp/test_sftp.py": 33,
    "tests/dashboard/test_instance_flow.py": 32,
    "tests/control_plane/test_caddy_serve.py": 30,
    "tests/control_plane/backups/test_replicas.py": 29,
    "tests/control_plane/api/test_fleet_limits.py[postgres]": 28,
    "tests/instance_runtime/test_cli_migrate.py": 26,
    "tests/control_plane/api/test_ssh_keys.py": 26,
    "tests/conformance/test_conformance_logs.py": 25,
    "tests/control_plane/api/test_token_scopes.py": 25,
    "tests/control_plane/test_reconcile.py": 23,
    "tests/control_plane/api/test_instances.py[postgres]": 23,
    "tests/dashboard/test_refusals.py": 23,
    "tests/conformance/test_conformance_backups.py": 22,
    "tests/test_end_to_end.py": 22,
    "tests/instance_runtime/core/test_data_folder_interop.py": 21,
    "tests/control_plane/api/test_login_throttling.py": 21,
    "tests/control_plane/backups/test_restore_window.py": 21,
    "tests/conformance/test_conformance_auth_oauth2.py": 21,
    "tests/dashboard/test_operator.py": 21,
    "tests/instance_runtime/tools/test_filesystem_storage.py": 20,
    "tests/dashboard/test_file_browser.py": 18,
    "tests/control_plane/api/test_instances_env.py[postgres]": 18,
    "tests/conformance/test_conformance_files.py": 18,
    "tests/control_plane/drivers/test_zygote_per_uid.py": 18,
    "tests/control_plane/api/test_body_limit.py": 16,
    "tests/control_plane/deploys/test_deploy_recovery.py": 16,
    "tests/control_plane/api/test_instances_env.py[sqlite]": 16,
    "tests/dashboard/test_jobs_panel.py": 16,
    "tests/instance_runtime/apis/test_api_backups.py": 15,
}


def unit_of(nodeid: str) -> str:
    path, _, test = nodeid.partition("::")
    for folder in SHARED_FOLDERS:
        if path.startswith(folder + "/"):
            return folder
    database = _DATABASE_PARAM.match(test)
    if database:
        return f"{path}[{database.group(1)}]"
    return path


def known_seconds(config: pytest.Config) -> dict[str, float]:
    """Seconds per unit: the last run's where there is one, else `MEASURED`'s. On xdist's
    workers, what their controller read (each worker must sort alike, even if another run
    writes the cache meanwhile)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and WORKERINPUT_KEY in workerinput:
        given: dict[str, float] = workerinput[WORKERINPUT_KEY]
        return given
    seconds = dict(MEASURED)
    cache = getattr(config, "cache", None)
    if cache is not None:
        cached = cache.get(CACHE_KEY, {})
        if isinstance(cached, dict):
            seconds.update({k: float(v) for k, v in cached.items() if isinstance(v, (int, float))})
    return seconds


def order(items: list[pytest.Item], seconds: Mapping[str, float]) -> None:
    """Sort `items` in place: units longest first (see the module's docstring). Stable: the
    order of a unit's own tests, and of units of equal rank, is kept."""

    def rank(item: pytest.Item) -> tuple[int, float]:
        taken = seconds.get(unit_of(item.nodeid))
        if taken is None:
            return (1, 0.0)
        return (0 if taken >= SLOW_S else 2, -taken)

    items.sort(key=rank)


def record(config: pytest.Config, taken: Iterable[tuple[str, float]]) -> None:
    """Add this run's seconds per unit to pytest's cache (units it did not run keep theirs)."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return
    totals: dict[str, float] = {}
    for nodeid, duration in taken:
        unit = unit_of(nodeid)
        totals[unit] = totals.get(unit, 0.0) + duration
    if not totals:
        return
    cached = cache.get(CACHE_KEY, {})
    merged = dict(cached) if isinstance(cached, dict) else {}
    merged.update({unit: round(total, 2) for unit, total in totals.items()})
    root = config.rootpath
    kept = {unit: taken for unit, taken in merged.items() if (root / _path_of(unit)).exists()}
    cache.set(CACHE_KEY, kept)


def _path_of(unit: str) -> str:
    return unit.split("[", 1)[0]


class UnitScheduling(LoadScopeScheduling):
    """xdist's scope scheduling over our units, in the order the workers collected them
    (`order` sorted it), not re-sorted by their numbers of tests."""

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)
