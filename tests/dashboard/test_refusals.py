"""Each refusal of the dashboard, shown where a person looks for it: a taken name, a wrong
password, an expired session, a form without its CSRF token (or from another site)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.support.browser import (
    PASSWORD,
    SLOW_MACHINE,
    Browsing,
    apex,
    control_db,
    log_in_in_browser,
    shot,
    sign_up_in_browser,
)
from tests.support.server import ServeProcess, running_server, sign_up

TAKEN = "taken-name"


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with running_server(env=SLOW_MACHINE) as server:
        # someone else already holds the name TAKEN (its row is enough: it need not run)
        api = server.client()
        api.headers["Authorization"] = f"Bearer {sign_up(api, 'first@example.com')}"
        assert api.post("/api/instances", json={"name": TAKEN}).status_code == 201
        yield server


def test_sign_up_errors_are_next_to_their_field(browsing: Browsing) -> None:
    page = browsing.new_page()
    page.goto("/signup")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("#e-email")).to_contain_text("email")
    expect(page.get_by_label("Email")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Email").fill("first@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("#e-email")).to_contain_text("An account with this email exists")

    page.get_by_label("Email").fill("new@example.com")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("#e-password")).to_contain_text("10 to 256 characters")
    shot(page, "refusal-signup")


def test_a_taken_name_is_refused_as_typed_and_on_submit(browsing: Browsing) -> None:
    page = browsing.new_page()
    sign_up_in_browser(page, "bob@example.com")
    page.get_by_label("Instance name").press_sequentially(TAKEN)
    expect(page.locator("#name-check")).to_contain_text("is taken")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#e-name")).to_contain_text(f"The name '{TAKEN}' is taken")
    expect(page.get_by_label("Instance name")).to_have_value(TAKEN)
    shot(page, "refusal-taken-name")


def test_a_wrong_password_is_refused(browsing: Browsing) -> None:
    page = browsing.new_page()
    page.goto("/login")
    page.get_by_label("Email").fill("bob@example.com")
    page.get_by_label("Password").fill("not-the-password")
    with page.expect_response("**/login") as answer:
        page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 401
    expect(page.locator("#e-password")).to_have_text("Wrong email or password")
    expect(page.get_by_label("Email")).to_have_value("bob@example.com")
    shot(page, "refusal-wrong-password")


def test_an_expired_session_goes_back_to_the_login(
    browsing: Browsing, server: ServeProcess
) -> None:
    page = browsing.new_page()
    log_in_in_browser(page, "bob@example.com")
    control_db(server)(
        "UPDATE api_token SET expires_at = '2000-01-01 00:00:00.000000' WHERE kind = 'session'"
        " AND account_id = (SELECT id FROM account WHERE email = ?)",
        ("bob@example.com",),
    )
    page.goto("/account")
    page.wait_for_url("**/login?next=/account&notice=expired")
    expect(page.get_by_role("status")).to_have_text("Your session has expired; log in again.")
    shot(page, "refusal-expired-session")
    # logging in again returns to the page that was asked for
    page.get_by_label("Email").fill("bob@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/account")


def test_a_form_without_its_csrf_token_is_refused(browsing: Browsing, server: ServeProcess) -> None:
    page = browsing.new_page()
    log_in_in_browser(page, "bob@example.com")
    page.get_by_label("Instance name").fill("no-token")
    page.locator("form.create input[name=csrf_token]").evaluate("input => input.remove()")
    with page.expect_response("**/instances") as answer:
        page.get_by_role("button", name="Create").click()
    assert answer.value.status == 403
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    shot(page, "refusal-missing-csrf")

    # the right token from another site's page is refused too
    page.goto("/instances")
    token = page.locator("input[name=csrf_token]").first.input_value()
    other_site = page.request.post(
        "/instances",
        form={"csrf_token": token, "name": "cross-site"},
        headers={"Origin": f"http://evil.localhost:{server.port}"},
    )
    assert other_site.status == 403
    # and nothing was created by either
    page.goto("/instances")
    expect(page.get_by_text("No instances yet")).to_be_visible()
    assert apex(server)
