"""Every recipe of docs/hooks.md, taken from the page itself and run in a real runtime process:
a record changed before it is saved or refused, a copy kept in the delete's transaction, a
welcome mail after sign-up (a real SMTP server), a create validated against an external API
(a real HTTP server on loopback, opened to the hooks with `PF_HOOKS_HTTP_ALLOW`), custom
routes, and a cron job run through `/api/crons`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.instance_runtime.hooks_runtime import (
    HooksRuntime,
    create_collection,
    create_user,
    wait_until,
)
from tests.support.smtp import SmtpServer

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "hooks.md"
_BLOCK = re.compile(r"```python\n# pb_hooks/(?P<name>[\w.-]+\.py)\n(?P<code>.*?)```", re.DOTALL)
STOCK = {"in-stock": 5, "last-one": 1}


def doc_files() -> dict[str, str]:
    files = {m.group("name"): m.group("code") for m in _BLOCK.finditer(DOCS.read_text())}
    return files


class _StockApi(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        sku = self.path.rsplit("/", 1)[-1]
        if not self.path.startswith("/stock/") or sku not in STOCK:
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"sku": sku, "available": STOCK[sku]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def rt(smtp: SmtpServer) -> Iterator[HooksRuntime]:
    stock = ThreadingHTTPServer(("127.0.0.1", 0), _StockApi)
    threading.Thread(target=stock.serve_forever, daemon=True).start()
    env = {
        "STOCK_API_URL": f"http://127.0.0.1:{stock.server_address[1]}",
        "PF_HOOKS_HTTP_ALLOW": "127.0.0.1/32",
    }
    try:
        with HooksRuntime.started(doc_files(), env=env) as runtime:
            su = runtime.client(superuser=True)
            meta = {"senderAddress": "hello@example.com", "senderName": "Docs"}
            settings = {**smtp.pocketbase_settings(), "meta": meta}
            assert su.patch("/api/settings", json=settings).status_code == 200
            users = su.get("/api/collections/users").json()
            open_rules = {
                "listRule": "",
                "viewRule": "",
                "createRule": "",
                "updateRule": "",
                "deleteRule": "",
            }
            create_collection(su, {"name": "posts", "type": "base", **open_rules, "fields": [
                {"name": "title", "type": "text"}, {"name": "slug", "type": "text"},
                {"name": "author", "type": "relation", "collectionId": users["id"],
                 "maxSelect": 1},
                {"name": "created", "type": "autodate", "onCreate": True},
                {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
            ]})  # fmt: skip
            create_collection(su, {"name": "trash", "type": "base", "fields": [
                {"name": "source", "type": "text"}, {"name": "data", "type": "json"},
            ]})  # fmt: skip
            create_collection(su, {"name": "orders", "type": "base", **open_rules, "fields": [
                {"name": "sku", "type": "text"}, {"name": "quantity", "type": "number"},
            ]})  # fmt: skip
            create_collection(su, {"name": "polls", "type": "base", **open_rules, "fields": [
                {"name": "question", "type": "text"}, {"name": "open", "type": "bool"},
                {"name": "closes", "type": "date"},
            ]})  # fmt: skip
            yield runtime
    finally:
        stock.shutdown()


def test_the_page_has_every_recipe() -> None:
    assert set(doc_files()) == {
        "hello.py", "posts.py", "welcome.py", "orders.py", "routes.py", "polls.py",
    }  # fmt: skip


def test_the_recipes_type_check_strictly_against_the_typed_api(tmp_path: Path) -> None:
    """What an editor completes, mypy checks: the API is typed all the way to the events."""
    folder = tmp_path / "pb_hooks"
    folder.mkdir()
    for name, code in doc_files().items():
        (folder / name).write_text(code)
    wrong = folder / "wrong.py"
    wrong.write_text(
        "from instance_runtime.hooks import RecordEvent, RequestEvent, app\n\n\n"
        "@app.on_record_create('posts')\n"
        "def wrong(e: RequestEvent) -> None:\n"
        "    pass\n\n\n"
        "@app.on_record_create\n"
        "def typo(e: RecordEvent) -> None:\n"
        "    e.recrd\n"
    )
    argv = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(
        [*argv, *sorted(str(p) for p in folder.glob("*.py"))],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert all(line.startswith(str(wrong)) for line in errors), done.stdout
    assert len(errors) == 2, done.stdout
    assert 'incompatible type "Callable[[RequestEvent], None]"' in errors[0]
    assert '"RecordEvent" has no attribute "recrd"' in errors[1]


def test_the_recipes_load_without_errors(rt: HooksRuntime) -> None:
    assert "pb_hooks: 6 file(s) loaded, 0 failed" in rt.log(), rt.log()


def test_hello(rt: HooksRuntime) -> None:
    assert rt.client().get("/api/hello/ann").json() == {"message": "Hello ann!"}


def test_change_a_record_or_refuse_it(rt: HooksRuntime) -> None:
    client = rt.client()
    made = client.post("/api/collections/posts/records", json={"title": "  My   First Post "})
    assert made.status_code == 200, made.text
    assert (made.json()["title"], made.json()["slug"]) == ("My First Post", "my-first-post")
    updated = client.patch(
        f"/api/collections/posts/records/{made.json()['id']}", json={"title": "Renamed  post"}
    )
    assert updated.status_code == 200 and updated.json()["slug"] == "renamed-post", updated.text
    spam = client.post("/api/collections/posts/records", json={"title": "FREE MONEY here"})
    assert spam.status_code == 400
    assert spam.json() == {
        "data": {"title": {"code": "spam", "message": "This looks like spam."}},
        "message": "The post was refused.",
        "status": 400,
    }

    assert client.delete(f"/api/collections/posts/records/{made.json()['id']}").status_code == 204
    trash = rt.client(superuser=True).get("/api/collections/trash/records").json()["items"]
    assert [(t["source"], t["data"]["title"]) for t in trash] == [("posts", "Renamed post")]


def test_send_a_mail_after_sign_up(rt: HooksRuntime, smtp: SmtpServer) -> None:
    made = rt.client().post(
        "/api/collections/users/records",
        json={"email": "newbie@example.com", "password": "newbie-pass-1",
              "passwordConfirm": "newbie-pass-1", "name": "Nia"},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    mail = smtp.wait_for(to="newbie@example.com", subject_contains="Welcome aboard")
    assert "Hello Nia, thanks for signing up." in mail.html
    assert mail.sender == "hello@example.com"


def test_validate_against_an_external_api(rt: HooksRuntime) -> None:
    client = rt.client()
    ok = client.post("/api/collections/orders/records", json={"sku": "in-stock", "quantity": 2})
    assert ok.status_code == 200, ok.text
    too_many = client.post(
        "/api/collections/orders/records", json={"sku": "last-one", "quantity": 3}
    )
    assert too_many.status_code == 400
    assert too_many.json()["data"] == {"sku": {"code": "out_of_stock", "message": "Only 1 left."}}
    unknown = client.post("/api/collections/orders/records", json={"sku": "nope"})
    assert unknown.status_code == 400 and "Only 0 left" in unknown.text
    skus = [o["sku"] for o in client.get("/api/collections/orders/records").json()["items"]]
    assert skus == ["in-stock"]


def test_custom_routes(rt: HooksRuntime) -> None:
    client = rt.client()
    assert client.get("/api/greet/bo?greeting=Hi").json() == {"message": "Hi bo!"}
    assert client.get("/api/my-posts").status_code == 401
    token = create_user(client, "author@example.com")
    me = rt.client(token=token).post("/api/collections/users/auth-refresh").json()["record"]
    for title in ("older", "newer"):
        made = rt.client(token=token).post(
            "/api/collections/posts/records", json={"title": title, "author": me["id"]}
        )
        assert made.status_code == 200, made.text
    client.post("/api/collections/posts/records", json={"title": "someone else's"})
    mine = rt.client(token=token).get("/api/my-posts")
    assert mine.status_code == 200, mine.text
    assert sorted(p["title"] for p in mine.json()["items"]) == ["newer", "older"]
    assert all(p["collectionName"] == "posts" for p in mine.json()["items"])


def test_a_cron_job(rt: HooksRuntime) -> None:
    su = rt.client(superuser=True)
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S.000Z")
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.000Z")
    expired = su.post("/api/collections/polls/records",
                      json={"question": "old", "open": True, "closes": past}).json()  # fmt: skip
    running = su.post("/api/collections/polls/records",
                      json={"question": "new", "open": True, "closes": future}).json()  # fmt: skip
    jobs = {job["id"]: job["expression"] for job in su.get("/api/crons").json()}
    assert jobs["close_polls"] == "*/5 * * * *"
    assert su.post("/api/crons/close_polls").status_code == 204

    def poll_open(rid: str) -> bool:
        return bool(su.get(f"/api/collections/polls/records/{rid}").json()["open"])

    wait_until(lambda: poll_open(expired["id"]), lambda is_open: not is_open)
    assert poll_open(running["id"]) is True
    rt.wait_for_log("closed 1 poll(s)")
