"""The start-up sweep of `DATA_DIR/.pf_uploads/` (`core.staging_sweep`): leftovers of a crashed
process go when the app starts, never the uploads in flight of an app still serving the folder
(a second `App`, e.g. `superuser upsert` next to `serve`); a symlink is removed, not followed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

from instance_runtime.core.app import App
from instance_runtime.core.files import STAGING
from tests.instance_runtime.runtime_process import RuntimeProcess
from tests.support.server import scratch_dir


def _leftovers(data_dir: Path, outside: Path) -> Path:
    staging = data_dir / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "0123abcd").write_bytes(b"half an upload")
    (staging / "adir").mkdir()
    (staging / "adir" / "inner").write_bytes(b"x")
    (staging / "alink").symlink_to(outside)
    return staging


def test_app_start_removes_leftovers(tmp_path: Path) -> None:
    data_dir = tmp_path / "pb_data"
    outside = tmp_path / "not-ours"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep me")
    staging = _leftovers(data_dir, outside)
    app = App(data_dir, readers=1)
    try:
        assert list(staging.iterdir()) == []
        assert (outside / "keep").read_bytes() == b"keep me"
    finally:
        app.close()


def test_a_second_app_leaves_the_first_ones_uploads(tmp_path: Path) -> None:
    data_dir = tmp_path / "pb_data"
    first = App(data_dir, readers=1)
    in_flight = data_dir / STAGING / "in-flight"
    in_flight.parent.mkdir(parents=True, exist_ok=True)
    in_flight.write_bytes(b"being uploaded")
    second = App(data_dir, readers=1)
    second.close()
    assert in_flight.exists()
    first.close()
    third = App(data_dir, readers=1)  # nobody else on the folder now: it sweeps
    third.close()
    assert not in_flight.exists()


def test_a_restarted_runtime_sweeps_what_a_killed_one_left() -> None:
    root = scratch_dir("pf-sweep-")
    runtime = RuntimeProcess(root)
    try:
        runtime.upsert_superuser()
        runtime.start()
        staging = runtime.data_dir / STAGING
        staging.mkdir(exist_ok=True)
        (staging / "in-flight").write_bytes(b"an upload of the running server")
        # a superuser upsert next to the serving process sweeps nothing
        subprocess.run(
            [sys.executable, "-m", "instance_runtime", "superuser", "upsert",
             "other@example.com", "other-pass-1234", "--dir", str(runtime.data_dir)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        assert (staging / "in-flight").exists()
        runtime.stop(signal.SIGKILL)
        runtime.start()
        assert list(staging.iterdir()) == []
    finally:
        runtime.stop()
        shutil.rmtree(root, ignore_errors=True)
