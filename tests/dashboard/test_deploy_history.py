"""The deploy history on the dashboard (issue 14) over HTTP against a real `pocketfleet serve`
and a real PocketBase instance: the instance page's Deploys section (newest first, the hint
before any deploy), a deploy's page with its log (escaped) and manifest, rollback through the
dashboard's form (served by the instance afterwards), and the refusals: no CSRF token (403),
another account (404), an unknown deploy (404), a deploy whose content is no longer kept
(409, shown in the section); one screenshot of the section in a browser."""

from __future__ import annotations

import hashlib
import html
import io
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from control_plane.db.models import Account
from dashboard.deploy_views import who_of
from tests.support.browser import SLOW_MACHINE, Browsing, apex, shot
from tests.support.server import ServeProcess, running_server
from tests.support.web import WebPerson

NAME = "shipped"
ONE = "<h1>first deploy</h1>\n"
TWO = "<h1>second deploy</h1>\n"
# a hook that prints markup when the engine loads it: the deploy's log must show it as text
NOISY_HOOK = 'console.log("<b>hook & co</b> loaded")\n'
GZIP = {"Content-Type": "application/gzip"}


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    # two archives kept: once rolled back to, the first deploy's content is no longer kept
    with running_server(env={"PF_DEPLOYS_KEEP": "2", **SLOW_MACHINE}) as server:
        yield server


def tar_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class Shipped:
    owner: WebPerson
    first: str  # deploy ids
    second: str
    before: str  # the instance page before any deploy


@pytest.fixture(scope="module")
def shipped(server: ServeProcess) -> Iterator[Shipped]:
    owner = WebPerson(server, "ida@example.com")
    assert owner.api.post("/api/instances", json={"name": NAME}).status_code == 201
    started = owner.api.post(f"/api/instances/{NAME}/start")
    assert started.status_code == 200 and started.json()["status"] == "running", started.text
    before = owner.page(f"/instances/{NAME}").text
    ids = []
    for files in (
        {"pb_public/index.html": ONE, "pb_hooks/noisy.pb.js": NOISY_HOOK},
        {"pb_public/index.html": TWO},
    ):
        made = owner.api.post(f"/api/instances/{NAME}/deploys", content=tar_of(files), headers=GZIP)
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "done" and made.json()["started"], made.text
        ids.append(made.json()["id"])
    yield Shipped(owner, ids[0], ids[1], before)
    owner.close()


def rows_of(page: httpx.Response) -> list[str]:
    """The deploy ids of the Deploys section, in its order."""
    return re.findall(r'<tr id="deploy-([^"]+)">', page.text)


def row_of(page: httpx.Response, deploy_id: str) -> str:
    found = re.search(rf'<tr id="deploy-{deploy_id}">(.*?)</tr>', page.text, re.S)
    assert found, page.text
    return found.group(1)


def rollback_url(deploy_id: str) -> str:
    return f"/instances/{NAME}/deploys/{deploy_id}/rollback"


def history(person: WebPerson) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = person.api.get(f"/api/instances/{NAME}/deploys").json()
    return rows


def poll(get: Any, check: Any, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response: httpx.Response = get()
        if check(response):
            return response
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)


def test_before_any_deploy_the_section_shows_the_cli_line(shipped: Shipped) -> None:
    assert 'id="deploys-h"' in shipped.before and 'id="deploys"' not in shipped.before
    assert f"<code>pocketfleet deploy {NAME} DIR</code>" in shipped.before
    assert "<code>pb_hooks/</code>, <code>pb_migrations/</code> and <code>pb_public/</code>" in (
        shipped.before
    )


def test_the_section_lists_the_deploys_newest_first(shipped: Shipped) -> None:
    page = shipped.owner.page(f"/instances/{NAME}")
    assert page.text.index('id="files-h"') < page.text.index('id="deploys-h"')
    assert rows_of(page) == [shipped.second, shipped.first]
    newest, older = row_of(page, shipped.second), row_of(page, shipped.first)
    for deploy_id, row in ((shipped.second, newest), (shipped.first, older)):
        assert f'href="/instances/{NAME}/deploys/{deploy_id}"' in row
        assert '<span class="pill pill-running">done</span>' in row
        assert re.search(r'<td data-label="By" title="account:\w+">you</td>', row)
        assert "deployed; the instance answers" in row
        assert re.search(r'<time datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d UTC">', row)
    assert f"1 · {len(TWO)} B" in newest  # files · size
    assert f"2 · {len(ONE) + len(NOISY_HOOK)} B" in older
    # the newest good deploy is the current one: no rollback to it
    assert "current" in newest and rollback_url(shipped.second) not in newest
    assert f'action="{rollback_url(shipped.first)}"' in older and "Roll back to this" in older


def test_a_deploy_page_shows_its_facts_log_and_manifest(shipped: Shipped) -> None:
    page = shipped.owner.page(f"/instances/{NAME}/deploys/{shipped.first}")
    assert f'Deploy <span class="mono">{shipped.first}</span>' in page.text
    facts = re.search(r'<dl class="facts" id="deploy-facts">(.*?)</dl>', page.text, re.S)
    assert facts and "done" in facts.group(1) and ">you</dd>" in facts.group(1)
    assert 'id="deploy-message"' in page.text
    log = re.search(r'<pre id="deploy-log"[^>]*>(.*?)</pre>', page.text, re.S)
    assert log, page.text
    assert "&lt;b&gt;hook &amp; co&lt;/b&gt; loaded" in log.group(1)  # escaped, not markup
    assert "<b>hook" not in page.text
    manifest = re.findall(
        r'<th scope="row" class="mono">([^<]+)</th><td data-label="sha256" class="mono" '
        r'title="([0-9a-f]{64})">([0-9a-f]+)</td>',
        page.text,
    )
    expected = {"pb_hooks/noisy.pb.js": NOISY_HOOK, "pb_public/index.html": ONE}
    assert [path for path, _full, _short in manifest] == sorted(expected)
    for path, full, short in manifest:
        assert full == hashlib.sha256(expected[path].encode()).hexdigest()
        assert short == full[:12]
    assert f'action="{rollback_url(shipped.first)}"' in page.text

    newest = shipped.owner.page(f"/instances/{NAME}/deploys/{shipped.second}")
    assert rollback_url(shipped.second) not in newest.text  # it is the current one
    assert "pb_hooks/noisy.pb.js" not in newest.text


def test_who_made_a_deploy_reads_as_people_say_it() -> None:
    owner = Account(id="owner1", email="o@example.com", password_hash="x")
    operator = Account(id="op1", email="p@example.com", password_hash="x", is_operator=True)
    assert who_of("account:owner1", owner, "owner1") == "you"
    assert who_of("account:owner1", operator, "owner1") == "the owner"
    assert who_of("operator:op1", operator, "owner1") == "you"
    assert who_of("operator:op1", owner, "owner1") == "an operator"
    assert who_of("account:someone", owner, "owner1") == "account:someone"


def test_a_rollback_without_the_csrf_token_is_refused(
    server: ServeProcess, shipped: Shipped
) -> None:
    with server.client(cookies={"pf_session": shipped.owner.web.cookies["pf_session"]}) as bare:
        refused = bare.post(rollback_url(shipped.first), data={})
        assert refused.status_code == 403 and "Form refused" in refused.text
        forged = bare.post(rollback_url(shipped.first), data={"csrf_token": "0" * 64})
        assert forged.status_code == 403
    assert len(history(shipped.owner)) == 2


def test_another_account_gets_404_for_the_page_and_the_rollback(
    server: ServeProcess, shipped: Shipped
) -> None:
    other = WebPerson(server, "jon@example.com")
    try:
        other.page(f"/instances/{NAME}/deploys/{shipped.first}", 404)
        refused = other.post(rollback_url(shipped.first))
        assert refused.status_code == 404 and "Not found" in refused.text
    finally:
        other.close()
    assert len(history(shipped.owner)) == 2


def test_an_unknown_deploy_is_404(shipped: Shipped) -> None:
    page = shipped.owner.page(f"/instances/{NAME}/deploys/nosuchdeploy", 404)
    assert "no such deploy" in page.text
    refused = shipped.owner.post(rollback_url("nosuchdeploy"))
    assert refused.status_code == 404 and "no such deploy" in refused.text
    assert len(history(shipped.owner)) == 2


def test_roll_back_through_the_form(server: ServeProcess, shipped: Shipped) -> None:
    done = shipped.owner.post(rollback_url(shipped.first))
    assert done.status_code == 200, done.text
    assert done.history[0].status_code == 303
    assert done.history[0].headers["location"] == f"/instances/{NAME}#deploys-h"
    rows = rows_of(done)
    assert rows[1:] == [shipped.second, shipped.first] and len(rows) == 3
    third = row_of(done, rows[0])
    assert f'rollback of <a href="/instances/{NAME}/deploys/{shipped.first}"' in third
    assert "current" in third and rollback_url(rows[0]) not in third
    assert history(shipped.owner)[0]["rollback_of"] == shipped.first
    with server.instance_client(NAME) as site:
        served = poll(lambda: site.get("/"), lambda r: r.status_code == 200)
        assert served.text == ONE

    # PF_DEPLOYS_KEEP=2: the first deploy's own archive is gone now; a stale form is refused
    # in the section, with the service's status
    assert rollback_url(shipped.first) not in row_of(done, shipped.first)
    assert f'action="{rollback_url(shipped.second)}"' in row_of(done, shipped.second)
    stale = shipped.owner.post(rollback_url(shipped.first))
    assert stale.status_code == 409, stale.text
    error = re.search(r'<p class="error" id="e-deploys" role="alert">([^<]+)</p>', stale.text)
    assert error and "not kept" in html.unescape(error.group(1))
    assert stale.text.index('id="deploys-h"') < stale.text.index('id="e-deploys"')
    assert len(history(shipped.owner)) == 3


def test_the_section_in_a_browser(
    browsing: Browsing, server: ServeProcess, shipped: Shipped
) -> None:
    page = browsing.new_page()
    token = shipped.owner.web.cookies["pf_session"]
    page.context.add_cookies([{"name": "pf_session", "value": token, "url": apex(server)}])
    page.goto(f"/instances/{NAME}#deploys-h")
    expect(page.locator("#deploys tbody tr")).to_have_count(3)
    expect(page.locator("#deploys tbody tr").first).to_contain_text("rollback of")
    shot(page, "instance-deploys")
