"""Instances of the `pocketfleet` engine running as their own uid (the control plane as root:
what `make run` as root and `deploy/` give), without a sandbox and in one: forked by the zygote,
they serve records, thumbnails, realtime, mail, S3 and a Python hook that imports modules of
the standard library only at request time, and keep serving. Without a sandbox, the uid may be
unable to enter where the interpreter lives (here /root, mode 0700): then the child runs in a
mount namespace of its own that shows it the runtime read-only (`fork_path(...).covers`) and,
of that folder, nothing else. With the zygote off, the same instance starts cold and serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from PIL import Image

from control_plane.drivers import sandbox
from control_plane.drivers.base import InstanceSpec, RunState
from control_plane.drivers.process import ProcessDriver
from control_plane.drivers.zygote import ForkPath, Zygotes, fork_path
from control_plane.engines.pocketfleet import PocketfleetEngine
from control_plane.settings import Settings
from tests.control_plane.conftest import SpecFactory
from tests.control_plane.drivers.test_zygote import zygote_ready
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, MotoServer
from tests.support.smtp import SmtpServer
from tests.support.zygotes import zygote_listening

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="instances get uids only as root")

EMAIL, PASSWORD = "zygote@example.com", "zygote-password-1"
BUCKET = "pf-zygote-per-uid"
# Imported by nothing before the request: the child reads them from the interpreter's folders
# as the instance's uid, at request time.
LATE_HOOK = """
import os
import sys

from instance_runtime.hooks import RequestEvent, app


@app.route("GET", "/api/late")
async def late(e: RequestEvent):
    fresh = [name for name in ("graphlib", "sched", "cmath") if name not in sys.modules]
    import cmath
    import graphlib
    import sched

    folder = e.query.get("folder", "/")
    try:
        listed = sorted(os.listdir(folder))
    except OSError as err:
        listed = err.strerror
    order = graphlib.TopologicalSorter({"b": {"a"}, "c": {"b"}}).static_order()
    return e.json(200, {
        "fresh": fresh,
        "files": [getattr(module, "__file__", "") for module in (graphlib, sched, cmath)],
        "version": sys.version,
        "order": list(order),
        "sqrt": str(cmath.sqrt(-4)),
        "queue": sched.scheduler().empty(),
        "uid": os.getuid(),
        "listed": listed,
    })
"""


@dataclass
class Layout:
    """One per-uid layout: the driver, the instance, and the path the engine's starts take."""

    driver: ProcessDriver
    spec: InstanceSpec
    path: ForkPath


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 200), (20, 120, 220)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(params=["unsandboxed", "sandboxed"])
def layout_kind(request: pytest.FixtureRequest) -> str:
    kind = str(request.param)
    if kind == "sandboxed" and sandbox.available() is not None:
        pytest.skip(f"no sandbox here: {sandbox.available()}")
    return kind


@pytest.fixture
async def layout(
    request: pytest.FixtureRequest,
    layout_kind: str,
    driver_settings: Settings,
    make_spec: SpecFactory,
) -> AsyncIterator[Layout]:
    zygote = bool(request.param)  # the zygote on or off: the test says (indirect)
    mode = "off" if layout_kind == "unsandboxed" else "on"
    settings = driver_settings.model_copy(update={"sandbox": mode, "zygote": zygote})
    driver = ProcessDriver(settings)
    engine = PocketfleetEngine()
    uid = settings.instance_uid_base + 8000 + os.getpid() % 1000 + (0 if zygote else 1000)
    spec = make_spec(engine=engine, version=engine.default_version(), uid=uid)
    spec.layout.hooks_dir.mkdir(parents=True)
    (spec.layout.hooks_dir / "late.py").write_text(LATE_HOOK)
    path = fork_path(
        engine,
        spec.version,
        zygote=zygote,
        own_uid=True,
        sandboxed=layout_kind == "sandboxed",
    )
    task = engine.superuser_task(spec.version, spec.layout, EMAIL, PASSWORD)
    code, output = await driver.run_task(spec, task.argv, task.env)
    assert code == 0, output
    try:
        yield Layout(driver, spec, path)
    finally:
        with contextlib.suppress(Exception):
            await driver.stop(spec, None)
        await driver.aclose()


async def _started(layout: Layout) -> int:
    """The instance started the way its layout starts it (a first, cold start brings the
    zygote up)."""
    driver, spec = layout.driver, layout.spec
    if driver.zygotes is not None:
        await driver.stop(spec, await driver.start(spec))
        await zygote_ready(driver, f"pocketfleet-{spec.version}")
    return await driver.start(spec)


async def _serves_everything(layout: Layout, pid: int) -> dict[str, Any]:
    """Records, a thumbnail, realtime, mail, S3 and the late-importing hook; the hook's
    answer."""
    spec = layout.spec
    base = f"http://127.0.0.1:{spec.port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        auth = await client.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
        assert auth.status_code == 200, auth.text
        client.headers["Authorization"] = auth.json()["token"]
        fields = [
            {"name": "title", "type": "text"},
            {"name": "pic", "type": "file", "maxSelect": 1, "maxSize": 1 << 20},
        ]
        made = await client.post(
            "/api/collections",
            json={"name": "notes", "fields": fields, "listRule": "", "viewRule": ""},
        )
        assert made.status_code == 200, made.text

        async with client.stream("GET", "/api/realtime") as events:
            lines = events.aiter_lines()
            connect = await _event(lines)
            assert connect["event"] == "PB_CONNECT"
            client_id = json.loads(connect["data"])["clientId"]
            subscribed = await client.post(
                "/api/realtime", json={"clientId": client_id, "subscriptions": ["notes"]}
            )
            assert subscribed.status_code == 204, subscribed.text
            created = await client.post(
                "/api/collections/notes/records",
                data={"title": "forked"},
                files={"pic": ("p.png", _png(), "image/png")},
            )
            assert created.status_code == 200, created.text
            record = created.json()
            event = await _event(lines)
            assert event["event"] == "notes"  # the subscription's topic
            assert json.loads(event["data"])["record"]["id"] == record["id"]

        listed = await client.get(
            "/api/collections/notes/records", params={"filter": "title != ''"}
        )
        assert [item["title"] for item in listed.json()["items"]] == ["forked"]
        thumb = await client.get(
            f"/api/files/notes/{record['id']}/{record['pic']}", params={"thumb": "100x100"}
        )
        assert thumb.status_code == 200, thumb.text
        assert Image.open(io.BytesIO(thumb.content)).size == (100, 100)

        with SmtpServer() as smtp:
            settings = await client.patch("/api/settings", json=smtp.pocketbase_settings())
            assert settings.status_code == 200, settings.text
            mailed = await client.post(
                "/api/settings/test/email",
                json={"template": "verification", "email": "to@example.com"},
            )
            assert mailed.status_code == 204, mailed.text
            await asyncio.to_thread(smtp.wait_for, to="to@example.com")

        with MotoServer() as moto:
            moto.create_bucket(BUCKET)
            s3 = {
                "enabled": True,
                "bucket": BUCKET,
                "region": "us-east-1",
                "endpoint": moto.url,
                "accessKey": ACCESS_KEY,
                "secret": SECRET_KEY,
                "forcePathStyle": True,
            }
            settings = await client.patch("/api/settings", json={"s3": s3})
            assert settings.status_code == 200, settings.text
            checked = await client.post("/api/settings/test/s3", json={"filesystem": "storage"})
            assert checked.status_code == 204, checked.text

        covered = layout.path.covers[0].folder if layout.path.covers else spec.layout.root
        late = await client.get("/api/late", params={"folder": str(covered)})
        logs = "\n".join(layout.driver.read_logs(spec, 40))
        assert late.status_code == 200, f"{late.text}\n{logs}"
        answer: dict[str, Any] = late.json()
    assert answer["uid"] == spec.uid
    assert answer["order"] == ["a", "b", "c"] and answer["sqrt"] == "2j" and answer["queue"]
    assert answer["fresh"] == ["graphlib", "sched", "cmath"]  # imported only now
    # ... and it keeps serving, the same process
    assert (await layout.driver.status(spec, pid)).state == RunState.RUNNING
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{spec.port}/api/health")
    assert health.status_code == 200
    assert "Traceback" not in "\n".join(layout.driver.read_logs(spec, 200))
    return answer


async def _event(lines: AsyncIterator[str]) -> dict[str, str]:
    """The next server-sent event (its `event` and `data` fields)."""
    fields: dict[str, str] = {}
    async with asyncio.timeout(10):
        async for line in lines:
            if not line:
                if fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            fields[name] = value.lstrip()
    raise AssertionError(f"the stream ended: {fields}")


@pytest.mark.parametrize("layout", [True], indirect=True)
async def test_an_instance_as_its_own_uid_is_forked_and_serves(layout: Layout) -> None:
    spec = layout.spec
    zygote_command = spec.engine.zygote_command(spec.version)
    assert zygote_command is not None
    assert layout.path.forked, layout.path.why

    pid = await _started(layout)
    child = psutil.Process(pid)
    assert child.uids().real == spec.uid
    assert child.cmdline()[: len(zygote_command)] == zygote_command  # a fork, never an exec
    parent = child.parent()
    assert parent is not None
    if layout.driver.sandboxed(spec):
        assert parent.name() == "bwrap"  # the reaper of the sandbox it joined
    else:
        assert parent.cmdline()[: len(zygote_command)] == zygote_command  # the zygote
        assert parent.ppid() == os.getpid()
    answer = await _serves_everything(layout, pid)
    assert psutil.Process(pid).is_running()
    assert answer["version"] == sys.version  # the zygote's interpreter, ours

    if layout.path.covers:  # the uid cannot enter where the interpreter lives
        cover = layout.path.covers[0]
        assert not cover.folder.stat().st_mode & 0o001
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        shown = sorted({path.relative_to(cover.folder).parts[0] for path in cover.paths})
        assert answer["listed"] == shown  # of that folder, it sees the runtime only
        modules = [path for path in answer["files"] if path.startswith(f"{cover.folder}/")]
        assert modules, answer["files"]  # the late imports came from there


@pytest.mark.parametrize("layout", [False], indirect=True)
async def test_with_the_zygote_off_the_instance_starts_cold_and_serves(layout: Layout) -> None:
    spec = layout.spec
    assert not layout.path.forked

    pid = await _started(layout)
    child = psutil.Process(pid)
    assert child.uids().real == spec.uid
    assert child.cmdline()[1:4] == ["-m", "instance_runtime", "serve"]  # executed anew
    await _serves_everything(layout, pid)


class _EngineAt(PocketfleetEngine):
    """Our engine, its runtime said to live at `paths` (real folders made by the test)."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = paths

    def runtime_paths(self, version: str) -> list[Path]:
        return self.paths


def test_the_path_says_which_way_instances_start_and_why(fleet_root: Path) -> None:
    closed = Path(tempfile.mkdtemp(dir=fleet_root))  # like /root: others cannot enter it
    runtime = closed / "python"
    runtime.mkdir()
    closed.chmod(0o700)
    runtime.chmod(0o755)
    engine = _EngineAt([runtime])
    version = engine.default_version()

    def way(**kw: bool) -> ForkPath:
        return fork_path(engine, version, **{"zygote": True, "sandboxed": False, **kw})

    hidden = way(own_uid=True)
    assert hidden.forked, hidden.why
    assert [(c.folder, c.paths) for c in hidden.covers] == [(closed, (runtime,))]
    assert str(closed) in hidden.why and "mount namespace" in hidden.why
    assert way(own_uid=True, sandboxed=True).covers == ()  # the sandbox shows it
    assert way(own_uid=False).forked and way(own_uid=False).covers == ()
    off = way(own_uid=True, zygote=False)
    assert not off.forked and "PF_ZYGOTE" in off.why

    private_runtime = closed / "private"  # shown or not, its files are closed to others
    private_runtime.mkdir(mode=0o700)
    engine.paths = [private_runtime]
    private = way(own_uid=True)
    assert not private.forked and str(private_runtime) in private.why
    assert "mode 0700" in private.why


async def test_a_child_that_cannot_be_shown_the_runtime_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = PocketfleetEngine()
    command = engine.zygote_command(engine.default_version())
    assert command is not None
    folder = tmp_path / "zygotes"
    zygotes = Zygotes(folder)
    key = "per-uid-refusal"
    try:
        assert await zygotes.spawn(key, command, {}) is None  # starts it
        await zygote_listening(zygotes, key)
        request = {
            "argv": [engine.python, "-m", "instance_runtime", "serve", "--dir", str(tmp_path)],
            "cwd": str(tmp_path),
            "env": {},
            "log": str(tmp_path / "child.log"),
            "uid": None,
            "nofile": 1024,
            "address_space": 1 << 32,
            "show": [{"folder": str(tmp_path / "a"), "paths": [str(tmp_path / "b")]}],
        }
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        assert await zygotes.spawn(key, command, request) is None  # refused: b is not in a
        assert "every path to show must be inside" in caplog.text
        zygote = psutil.Process(zygotes._procs[key].pid)
        for _ in range(50):  # the child it forked has exited and is reaped
            if not zygote.children():
                break
            await asyncio.sleep(0.1)
        assert zygote.children() == []
        assert not (tmp_path / "child.log").exists()  # it never became the instance
    finally:
        zygotes.close()
