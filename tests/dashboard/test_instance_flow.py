"""A person's whole story in the browser: sign up, create an instance (the name checked as it
is typed), see it running, open its URL and its admin UI signed in, stop and start it, set an
environment variable, follow its logs and charts, delete it."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.support.browser import SLOW_MACHINE, Browsing, apex, shot, sign_up_in_browser
from tests.support.server import ServeProcess, running_server

EMAIL = "ada@example.com"
NAME = "shop"


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    env = {"PF_METRICS_INTERVAL_S": "1", "PF_SAMPLE_INTERVAL_S": "1", **SLOW_MACHINE}
    with running_server(env=env) as server:
        yield server


@pytest.fixture(scope="module")
def page(browsing: Browsing) -> Page:
    return browsing.new_page()


def instance_url(server: ServeProcess) -> str:
    return f"http://{NAME}.localhost:{server.port}"


def health(server: ServeProcess) -> int:
    """The status of the instance's health URL, through the proxy (as the SDK would see it)."""
    with server.instance_client(NAME) as instance:
        return instance.get("/api/health").status_code


def test_sign_up_then_create_an_instance_and_see_it_running(
    page: Page, server: ServeProcess
) -> None:
    sign_up_in_browser(page, EMAIL)
    expect(page.get_by_role("status").first).to_contain_text("Welcome")

    name = page.get_by_label("Instance name")
    name.press_sequentially("My_App")
    expect(page.locator("#name-check")).to_contain_text("lowercase letters")
    name.fill("")
    name.press_sequentially(NAME)
    expect(page.locator("#name-check")).to_contain_text(f"{instance_url(server)} is available")
    expect(page.get_by_label("Engine")).to_have_value("pocketbase")
    expect(page.get_by_label("Version")).to_have_value("0.40.6")
    shot(page, "instances-create-form")

    page.get_by_role("button", name="Create").click()
    page.wait_for_url(f"**/instances/{NAME}?notice=created")
    expect(page.locator("#status .pill")).to_have_text("running")
    live = page.get_by_role("link", name=instance_url(server))
    expect(live).to_be_visible()
    expect(page.get_by_label("URL")).to_have_value(instance_url(server))
    shot(page, "instance-running")

    page.goto("/instances")
    row = page.get_by_role("row", name=re.compile(NAME))
    expect(row.locator(".pill")).to_have_text("running")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "instances-list-phone")
    page.set_viewport_size({"width": 1280, "height": 720})


def test_open_its_url(page: Page, server: ServeProcess) -> None:
    tab = page.context.new_page()
    answer = tab.goto(f"{instance_url(server)}/api/health")
    assert answer is not None and answer.status == 200
    assert answer.json()["message"] == "API is healthy."
    shot(tab, "instance-url")
    tab.close()


def _open_admin(page: Page) -> Page:
    with page.context.expect_page() as opened:
        page.get_by_role("button", name="Open admin").click()
    return opened.value


def test_open_admin_signs_the_owner_in(page: Page, server: ServeProcess) -> None:
    page.goto(f"/instances/{NAME}")
    admin = _open_admin(page)
    admin_ui = re.compile(rf"^{re.escape(instance_url(server))}/_/")
    try:
        admin.wait_for_url(admin_ui, timeout=20_000)
    except PlaywrightError as err:
        # Seen in 2 of 5 full runs (never alone): the tab did not reach the admin UI. Say
        # where it stopped (for whoever reads the warnings), then click again as a user would
        # (a fresh single-use link); a second miss fails the test.
        where = f"{admin.url}\n{admin.content()[:2000]}"
        note = f"Open admin, first try: {err}\nthe tab is at {where}\n{server.output()}"
        warnings.warn(note, stacklevel=1)
        admin.close()
        admin = _open_admin(page)
        admin.wait_for_url(admin_ui)
    expect(admin.get_by_text("dashboard@pocketfleet.invalid").first).to_be_attached()
    expect(admin.get_by_role("link", name=re.compile("Collections"))).to_be_visible()
    shot(admin, "instance-admin-signed-in")
    stored = admin.evaluate("() => JSON.parse(localStorage.getItem('__pb_superusers__/_'))")
    assert stored["record"]["collectionName"] == "_superusers"
    admin.close()


def test_an_admin_link_works_once(page: Page, server: ServeProcess) -> None:
    """The hand-off code is single-use: following the same link again is refused."""
    answer = page.request.post(
        f"/instances/{NAME}/admin",
        form={"csrf_token": page.locator("input[name=csrf_token]").first.input_value()},
        max_redirects=0,
    )
    assert answer.status == 303
    link = answer.headers["location"]
    assert link.startswith(f"{instance_url(server)}/_pf/handoff?code=")
    path = link.removeprefix(instance_url(server))
    with server.instance_client(NAME) as instance:
        first = instance.get(path)
        assert first.status_code == 200 and "localStorage" in first.text
        assert instance.get(path).status_code == 410


def test_stop_and_start(page: Page, server: ServeProcess) -> None:
    page.goto(f"/instances/{NAME}")
    page.get_by_role("button", name="Stop").click()
    page.wait_for_url("**?notice=stopped")
    expect(page.locator("#status .pill")).to_have_text("stopped")
    expect(page.get_by_role("button", name="Open admin")).to_be_disabled()
    assert health(server) == 503
    shot(page, "instance-stopped")

    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**?notice=started")
    expect(page.locator("#status .pill")).to_have_text("running")
    assert health(server) == 200


def test_set_an_environment_variable(page: Page) -> None:
    page.goto(f"/instances/{NAME}")
    page.get_by_label("Variable name").fill("GREETING")
    page.get_by_label("Value").fill("hello-secret-value")
    page.get_by_role("button", name="Save variable").click()
    page.wait_for_url("**?notice=env_saved#env-h")
    row = page.get_by_role("row", name=re.compile("GREETING"))
    expect(row).to_contain_text("••••••••")
    expect(row).to_contain_text("17–32 characters")
    expect(row).not_to_contain_text("hello")
    assert "hello-secret-value" not in page.content()
    expect(page.locator("#status .pill")).to_have_text("running")

    page.get_by_label("Variable name").fill("LD_PRELOAD")
    page.get_by_label("Value").fill("/tmp/evil.so")
    page.get_by_role("button", name="Save variable").click()
    expect(page.locator("#e-key")).to_contain_text("LD_PRELOAD: interpreted by the dynamic linker")
    page.get_by_label("Variable name").fill("TOO_LONG")
    page.get_by_label("Value").fill("x" * 8193)
    page.get_by_role("button", name="Save variable").click()
    expect(page.locator("#e-value")).to_contain_text("TOO_LONG: the value is 8193 bytes")
    expect(page.get_by_role("row", name=re.compile("LD_PRELOAD|TOO_LONG"))).to_have_count(0)
    shot(page, "instance-env")


def test_logs_and_charts_follow_the_instance(page: Page, server: ServeProcess) -> None:
    for _ in range(5):
        assert health(server) == 200
    page.goto(f"/instances/{NAME}?hours=1")
    expect(page.locator("#logs")).to_contain_text("Server started")
    # chart points are kept every second here: wait until one has counted those requests
    summary = page.locator("svg.chart desc").first
    for _ in range(60):
        if re.match(r"[1-9]\d* requests", summary.text_content() or ""):
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(summary).to_have_text(re.compile(r"^[1-9]\d* requests in the last 1 h"))
    expect(page.locator("svg.chart polyline.line, svg.chart circle.dot").first).to_be_attached()
    shot(page, "instance-page")


def test_hibernate_and_wake_on_request(page: Page, server: ServeProcess) -> None:
    page.goto(f"/instances/{NAME}")
    page.get_by_role("button", name="Hibernate").click()
    page.wait_for_url("**?notice=hibernated")
    expect(page.locator("#status .pill")).to_have_text("hibernated")
    expect(page.get_by_role("button", name="Wake")).to_be_visible()
    shot(page, "instance-hibernated")
    assert health(server) == 200  # the request itself wakes it
    expect(page.locator("#status .pill")).to_have_text("running")  # the panel follows live


def test_back_up_now(page: Page) -> None:
    page.goto(f"/instances/{NAME}")
    page.get_by_role("button", name="Back up now").click()
    page.wait_for_url("**?notice=backed_up#backups-h")
    row = page.locator("#snapshots tbody tr").first
    expect(row.locator(".pill")).to_have_text("good")
    expect(row.get_by_role("link", name="Download")).to_be_visible()
    with page.expect_download() as download:
        row.get_by_role("link", name="Download").click()
    assert download.value.suggested_filename.endswith(".tar.gz")
    page.get_by_label("Schedule", exact=True).fill("every minute please")
    page.get_by_role("button", name="Save schedule").click()
    expect(page.locator("#e-schedule")).to_be_visible()
    shot(page, "instance-backups")


def test_delete_needs_the_name_typed(page: Page, server: ServeProcess) -> None:
    page.goto(f"/instances/{NAME}")
    delete = page.get_by_role("button", name=f"Delete {NAME}")
    expect(delete).to_be_disabled()
    page.get_by_label(f"Type {NAME} to confirm").fill("sho")
    expect(delete).to_be_disabled()
    page.get_by_label(f"Type {NAME} to confirm").fill(NAME)
    expect(delete).to_be_enabled()
    delete.click()
    page.wait_for_url("**/instances?notice=deleted#delete-h")
    expect(page.get_by_text("No instances yet")).to_be_visible()
    assert health(server) == 404
    shot(page, "instance-deleted")
    assert apex(server).startswith("http://localhost:")
