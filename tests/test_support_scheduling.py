"""Self-checks of tests/support/scheduling.py: the work units, their order, the cache of their
seconds, and a real pytest-xdist run with `UnitScheduling` (in a folder of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import scheduling
from tests.support.scheduling import order, record, unit_of

ROOT = Path(__file__).resolve().parents[1]
# the folder's run needs xdist only (fewer imports on a loaded machine)
NO_PLUGINS = [
    f"-pno:{name}" for name in ("cacheprovider", "schemathesis", "hypothesispytest", "anyio")
]


def test_a_unit_is_a_file_a_shared_folder_or_a_file_over_one_control_database() -> None:
    assert unit_of("tests/proxy/test_wake.py::test_x[a-b]") == "tests/proxy/test_wake.py"
    assert unit_of("tests/security/test_hostile_env.py::test_x") == "tests/security"
    assert unit_of("tests/securityx/test_y.py::test_x") == "tests/securityx/test_y.py"
    assert unit_of("tests/a/test_b.py::test_c[postgres]") == "tests/a/test_b.py[postgres]"
    assert (
        unit_of("tests/a/test_b.py::Cls::test_c[sqlite-LD_PRELOAD]") == "tests/a/test_b.py[sqlite]"
    )
    assert unit_of("tests/a/test_b.py::test_c[x-sqlite]") == "tests/a/test_b.py"  # not first
    assert unit_of("tests/a/test_b.py::test_c[sqlite3]") == "tests/a/test_b.py"


class _Item:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


def test_known_slow_units_go_first_then_unknown_ones_then_known_short_ones() -> None:
    ids = [
        "tests/a.py::t1",
        "tests/b.py::t1",
        "tests/c.py::t1[sqlite]",
        "tests/c.py::t1[postgres]",
        "tests/a.py::t2",
        "tests/d.py::t1",
        "tests/e.py::t1",
    ]
    items: list[Any] = [_Item(nodeid) for nodeid in ids]
    seconds = {"tests/b.py": 20.0, "tests/c.py[postgres]": 90.0, "tests/a.py": 1.0, "tests/e.py": 2}
    order(items, seconds)
    assert [item.nodeid for item in items] == [
        "tests/c.py::t1[postgres]",
        "tests/b.py::t1",
        "tests/c.py::t1[sqlite]",  # unknown: collection order
        "tests/d.py::t1",
        "tests/e.py::t1",
        "tests/a.py::t1",  # a unit's tests keep their order
        "tests/a.py::t2",
    ]


class _Cache:
    def __init__(self, value: object) -> None:
        self.value = value

    def get(self, key: str, default: object) -> object:
        assert key == scheduling.CACHE_KEY
        return self.value if self.value is not None else default

    def set(self, key: str, value: object) -> None:
        assert key == scheduling.CACHE_KEY
        self.value = value


class _Config:
    def __init__(self, cache: _Cache, rootpath: Path) -> None:
        self.cache = cache
        self.rootpath = rootpath


def test_a_run_adds_its_seconds_per_unit_and_forgets_removed_files(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    for name in ("test_a.py", "test_b.py", "test_c.py"):
        (tmp_path / "tests" / name).touch()
    cache = _Cache({"tests/test_a.py": 5.0, "tests/test_c.py": 7.0, "tests/test_gone.py": 9.0})
    config: Any = _Config(cache, tmp_path)
    record(
        config,
        [
            ("tests/test_a.py::t1", 1.0),  # setup, call and teardown of one test
            ("tests/test_a.py::t1", 2.0),
            ("tests/test_a.py::t1", 0.5),
            ("tests/test_b.py::t1[postgres]", 4.0),
        ],
    )
    assert cache.value == {
        "tests/test_a.py": 3.5,
        "tests/test_c.py": 7.0,
        "tests/test_b.py[postgres]": 4.0,
    }
    config.workerinput = {}
    assert scheduling.known_seconds(config) == {**scheduling.MEASURED, **cache.value}
    config.workerinput = {scheduling.WORKERINPUT_KEY: {"tests/test_c.py": 1.0}}
    assert scheduling.known_seconds(config) == {"tests/test_c.py": 1.0}  # the controller's


CONFTEST = """
from tests.support import scheduling

SECONDS = {"tests/test_slow.py": 30.0, "tests/test_db.py[postgres]": 20.0}

def pytest_collection_modifyitems(items):
    scheduling.order(items, SECONDS)

def pytest_xdist_make_scheduler(config, log):
    return scheduling.UnitScheduling(config, log)
"""

TEST = """
import json, os, time

def _note(request):
    with open(os.environ["RUN_LOG"], "a") as log:
        line = {"worker": os.environ["PYTEST_XDIST_WORKER"], "id": request.node.nodeid,
                "at": time.monotonic()}
        log.write(json.dumps(line) + "\\n")
"""


def _write_suite(root: Path) -> None:
    (root / "tests" / "security").mkdir(parents=True)
    (root / "conftest.py").write_text(CONFTEST)
    tests = {
        "tests/test_slow.py": "def test_one(request):\n    _note(request)\n",
        "tests/test_db.py": (
            "import pytest\n"
            "@pytest.fixture(scope='module', params=['sqlite', 'postgres'])\n"
            "def backend(request):\n    return request.param\n"
            "def test_a(backend, request):\n    _note(request)\n"
            "def test_b(backend, request):\n    _note(request)\n"
        ),
        **{
            f"tests/security/test_s{n}.py": "".join(
                f"def test_{i}(request):\n    _note(request)\n" for i in range(3)
            )
            for n in range(3)
        },
        **{f"tests/test_f{n}.py": "def test_x(request):\n    _note(request)\n" for n in range(4)},
    }
    for path, body in tests.items():
        (root / path).write_text(TEST + body)


def test_an_xdist_run_keeps_units_on_one_worker_and_starts_the_longest_first(
    tmp_path: Path,
) -> None:
    _write_suite(tmp_path)
    log = tmp_path / "run.jsonl"
    env = {**os.environ, "RUN_LOG": str(log), "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", *NO_PLUGINS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(runs) == 18
    workers: dict[str, set[str]] = {}
    for run in runs:
        workers.setdefault(unit_of(run["id"]), set()).add(run["worker"])
    assert all(len(ran_on) == 1 for ran_on in workers.values()), workers
    assert {"tests/security", "tests/test_db.py[sqlite]", "tests/test_db.py[postgres]"} <= set(
        workers
    )
    firsts: dict[str, str] = {}
    for run in sorted(runs, key=lambda run: run["at"]):
        firsts.setdefault(run["worker"], unit_of(run["id"]))
    assert set(firsts.values()) == {"tests/test_slow.py", "tests/test_db.py[postgres]"}
