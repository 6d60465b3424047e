"""Loading and reloading `pb_hooks/*.py` in a real runtime process: name order, helper modules,
files that fail (logged with their traceback, the others loaded, nothing of theirs kept),
reload on change in place (new code, removed files and their routes and crons gone, no handler
doubled, lifecycle handlers, a file broken by an edit), open connections kept across a reload,
nothing written into the folder."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.instance_runtime.hooks_runtime import HooksRuntime, create_collection, wait_until

ORDER_A = """
from pb_hooks import _shared
_shared.order.append("a")
"""
ORDER_B = """
from instance_runtime.hooks import RequestEvent, app
from pb_hooks import _shared
from pb_hooks.lib import words

_shared.order.append("b")


@app.route("GET", "/api/order")
async def order(e: RequestEvent) -> dict[str, object]:
    return {"order": _shared.order, "word": words.WORD, "module": __name__}
"""
SHARED = "order: list[str] = []\n"
WORDS = 'WORD = "from a sub-folder"\n'

BROKEN_RUNTIME = """
from instance_runtime.hooks import app


@app.route("GET", "/api/half-registered")
async def half(e) -> dict[str, str]:
    return {"should": "not exist"}


@app.cron("0 1 * * *", id="broken_job")
def job() -> None:
    pass


raise LookupError("this file stops here")
"""
BROKEN_SYNTAX = "def oops(:\n"
BROKEN_ASYNC_MODEL_HOOK = """
from instance_runtime.hooks import app


@app.on_record_create("items")
async def not_allowed(e) -> None:
    e.next()
"""
BAD_CRON = """
from instance_runtime.hooks import app


@app.cron("61 * * * *")
def never() -> None:
    pass
"""

V1 = """
from instance_runtime.hooks import LifecycleEvent, RecordEvent, RequestEvent, app


@app.route("GET", "/api/version")
async def version(e: RequestEvent) -> dict[str, str]:
    return {"version": "one"}


@app.on_record_create("items")
def bang(e: RecordEvent) -> None:
    e.record["title"] = str(e.record.get("title", "")) + "!"
    e.next()


@app.cron("0 2 * * *", id="v1_job")
def v1_job() -> None:
    pass


@app.on_serve
def serving(e: LifecycleEvent) -> None:
    app.logger.info("v1 serving")
    e.next()


@app.on_terminate
def terminating(e: LifecycleEvent) -> None:
    app.logger.info("v1 terminating")
    e.next()
"""
V2 = """
from instance_runtime.hooks import BootstrapEvent, RecordEvent, RequestEvent, app


@app.route("GET", "/api/version")
async def version(e: RequestEvent) -> dict[str, str]:
    return {"version": "two"}


@app.on_record_create("items")
def bang(e: RecordEvent) -> None:
    e.record["title"] = str(e.record.get("title", "")) + "?"
    e.next()


@app.on_bootstrap
def booted(e: BootstrapEvent) -> None:
    app.logger.info("v2 bootstrapped")
    e.next()
"""
EXTRA = """
from instance_runtime.hooks import RequestEvent, app


@app.route("GET", "/api/extra")
async def extra(e: RequestEvent) -> dict[str, bool]:
    return {"extra": True}


@app.cron("0 3 * * *", id="extra_job")
def extra_job() -> None:
    pass
"""


def _jobs(rt: HooksRuntime) -> list[str]:
    listed = rt.client(superuser=True).get("/api/crons").json()
    return [job["id"] for job in listed if not job["id"].startswith("__pb")]


def _reloaded(rt: HooksRuntime, since: int) -> None:
    rt.wait_for_log("pb_hooks: reload done", since=since)


def test_files_load_in_name_order_and_import_helpers_from_the_pb_hooks_package() -> None:
    never = "raise SystemError('never run')\n"
    files = {"20_b.py": ORDER_B, "10_a.py": ORDER_A, "_shared.py": SHARED,
             "lib/words.py": WORDS, "lib/not_a_hook.py": never}  # fmt: skip
    with HooksRuntime.started(files) as rt:
        answer = rt.client().get("/api/order")
        assert answer.status_code == 200, rt.log()
        assert answer.json() == {
            "order": ["a", "b"],  # 10_a before 20_b; _shared is a helper, run once
            "word": "from a sub-folder",
            "module": "pb_hooks.20_b",
        }
        assert "pb_hooks: 2 file(s) loaded, 0 failed" in rt.log()
        assert "never run" not in rt.log()
        assert not list(rt.hooks_dir.rglob("__pycache__"))  # nothing written into the folder


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (BROKEN_RUNTIME, "LookupError: this file stops here"),
        (BROKEN_SYNTAX, "SyntaxError"),
        (BROKEN_ASYNC_MODEL_HOOK, "on_record_create handlers run synchronously"),
        (BAD_CRON, "invalid segment value"),
    ],
    ids=["raises", "syntax", "async-model-hook", "bad-cron"],
)
def test_a_file_that_fails_is_logged_and_the_others_load(source: str, expected: str) -> None:
    with HooksRuntime.started({"10_broken.py": source, "20_good.py": EXTRA}) as rt:
        log = rt.log()
        assert "pb_hooks/10_broken.py failed to load" in log
        assert expected in log and "Traceback" in log and "10_broken.py" in log
        assert "pb_hooks: 1 file(s) loaded, 1 failed" in log
        assert rt.client().get("/api/extra").json() == {"extra": True}
        # what the broken file registered before it failed is not kept
        assert rt.client().get("/api/half-registered").status_code == 404
        assert _jobs(rt) == ["extra_job"]


@pytest.fixture(scope="module")
def reloading() -> Iterator[HooksRuntime]:
    with HooksRuntime.started({"main.py": V1}) as rt:
        create_collection(rt.client(superuser=True), {
            "name": "items", "type": "base", "createRule": "", "listRule": "",
            "fields": [{"name": "title", "type": "text"}],
        })  # fmt: skip
        yield rt


def _create(rt: HooksRuntime, title: str) -> str:
    made = rt.client().post("/api/collections/items/records", json={"title": title})
    assert made.status_code == 200, made.text
    created: str = made.json()["title"]
    return created


def test_an_edit_is_reloaded_in_place_without_doubling_handlers(reloading: HooksRuntime) -> None:
    rt = reloading
    assert rt.client().get("/api/version").json() == {"version": "one"}
    assert _create(rt, "a") == "a!"
    assert _jobs(rt) == ["v1_job"]
    pid = rt.process.pid if rt.process else 0
    mark = rt.log_mark()

    rt.write_hook("main.py", V2)
    _reloaded(rt, mark)
    assert rt.client().get("/api/version").json() == {"version": "two"}
    assert _create(rt, "b") == "b?"  # the new handler alone: not "b!?" nor "b?!"
    assert _jobs(rt) == []  # v1's job went with v1
    log = rt.log()[mark:]
    assert log.index("v1 terminating") < log.index("v2 bootstrapped")
    assert rt.process is not None and rt.process.pid == pid and rt.process.poll() is None

    mark = rt.log_mark()
    rt.write_hook("main.py", V1)
    _reloaded(rt, mark)
    rt.wait_for_log("v1 serving", since=mark)  # on_serve runs for the files of a reload
    assert _create(rt, "c") == "c!"


def test_added_and_removed_files_take_their_routes_and_crons_along(
    reloading: HooksRuntime,
) -> None:
    rt = reloading
    mark = rt.log_mark()
    rt.write_hook("extra.py", EXTRA)
    _reloaded(rt, mark)
    wait_until(lambda: rt.client().get("/api/extra").status_code, lambda s: s == 200)
    assert "extra_job" in _jobs(rt)

    mark = rt.log_mark()
    rt.remove_hook("extra.py")
    _reloaded(rt, mark)
    assert rt.client().get("/api/extra").status_code == 404
    assert "extra_job" not in _jobs(rt)


def test_an_edit_that_breaks_a_file_is_logged_and_the_rest_keeps_working(
    reloading: HooksRuntime,
) -> None:
    rt = reloading
    rt.write_hook("other.py", EXTRA)
    mark = rt.log_mark()
    rt.write_hook("main.py", BROKEN_SYNTAX)
    rt.wait_for_log("pb_hooks/main.py failed to load", since=mark)
    wait_until(lambda: rt.client().get("/api/extra").status_code, lambda s: s == 200)
    assert rt.client().get("/api/version").status_code == 404
    assert _create(rt, "d") == "d"  # no handler of main.py is left
    mark = rt.log_mark()
    rt.remove_hook("other.py")
    rt.write_hook("main.py", V1)
    _reloaded(rt, mark)
    assert rt.client().get("/api/version").json() == {"version": "one"}


def test_a_realtime_connection_stays_open_across_a_reload(reloading: HooksRuntime) -> None:
    rt = reloading
    events: list[str] = []
    client_id: list[str] = []
    connected = threading.Event()
    got_item = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(base_url=rt.url, timeout=20) as client,
            client.stream("GET", "/api/realtime") as stream,
        ):
            for line in stream.iter_lines():
                found = re.match(r'data:\{"clientId":"([^"]+)"', line)
                if found:
                    client_id.append(found.group(1))
                    connected.set()
                elif line.startswith("data:"):
                    events.append(line)
                    if "after-reload" in line:
                        got_item.set()
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    mark = rt.log_mark()
    rt.write_hook("main.py", V2)
    _reloaded(rt, mark)
    # the client opened before the reload subscribes and gets its event on the same stream
    subscribed = httpx.post(
        f"{rt.url}/api/realtime", json={"clientId": client_id[0], "subscriptions": ["items"]}
    )
    assert subscribed.status_code == 204, subscribed.text
    assert _create(rt, "after-reload") == "after-reload?"
    assert got_item.wait(10), events
    listener.join(5)
