"""Operators in the browser: the fleet (filter, sort), suspending an account stops its
instances, system health and nodes; and any account's page: API tokens and the password change."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import (
    PASSWORD,
    SLOW_MACHINE,
    Browsing,
    log_in_in_browser,
    shot,
    sign_up_in_browser,
)
from tests.support.server import ServeProcess, running_server, sign_up

OPERATOR = "root@example.com"
USER = "carol@example.com"
APP = "carol-app"


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with running_server(env={"PF_FIRST_ACCOUNT_IS_OPERATOR": "true", **SLOW_MACHINE}) as server:
        yield server


@pytest.fixture(scope="module")
def operator(browsing: Browsing) -> Page:
    page = browsing.new_page()
    sign_up_in_browser(page, OPERATOR)  # the first account: an operator here
    return page


@pytest.fixture(scope="module")
def user_api(server: ServeProcess, operator: Page) -> httpx.Client:
    """Carol, with a running instance (made through the API: the browser story is elsewhere)."""
    api = server.client()
    api.headers["Authorization"] = f"Bearer {sign_up(api, USER)}"
    assert api.post("/api/instances", json={"name": APP}).status_code == 201
    wait_for_status(api, "running")
    return api


def wait_for_status(api: httpx.Client, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        row: dict[str, Any] = api.get(f"/api/instances/{APP}").json()
        if row["status"] == status or time.monotonic() > deadline:
            assert row["status"] == status, row
            return row
        time.sleep(0.2)


def test_the_fleet_lists_every_instance_with_sort_and_filter(
    operator: Page, user_api: httpx.Client
) -> None:
    operator.goto("/fleet")
    row = operator.get_by_role("row", name=re.compile(APP))
    expect(row).to_contain_text(USER)
    expect(row.locator(".pill")).to_have_text("running")
    operator.get_by_label("Filter by name or owner").fill("nobody")
    operator.get_by_role("button", name="Apply").click()
    expect(operator.get_by_text("No instance matches.")).to_be_visible()
    operator.get_by_label("Filter by name or owner").fill("carol")
    operator.get_by_label("Sort by").select_option("memory")
    operator.get_by_role("button", name="Apply").click()
    expect(operator.get_by_role("row", name=re.compile(APP))).to_be_visible()
    expect(operator.locator("th[aria-sort]")).to_contain_text("Memory")
    shot(operator, "operator-fleet")


def test_suspending_an_account_stops_its_instances(operator: Page, user_api: httpx.Client) -> None:
    operator.goto("/accounts")
    operator.get_by_role("button", name=f"Suspend {USER}").click()
    operator.wait_for_url("**/accounts?notice=suspended_account")
    expect(operator.get_by_role("row", name=re.compile(USER))).to_contain_text("suspended")
    shot(operator, "operator-accounts")

    operator.goto(f"/fleet?q={APP}")
    pill = operator.get_by_role("row", name=re.compile(APP)).locator(".pill").last
    for _ in range(60):
        if pill.text_content() == "stopped":
            break
        operator.wait_for_timeout(500)
        operator.reload()
    expect(pill).to_have_text("stopped")
    shot(operator, "operator-fleet-suspended")
    assert user_api.get("/api/instances").status_code == 403

    operator.goto("/accounts")
    operator.get_by_role("button", name=f"Resume {USER}").click()
    operator.wait_for_url("**/accounts?notice=resumed_account")
    assert wait_for_status(user_api, "running")["status"] == "running"


def test_system_health(operator: Page, user_api: httpx.Client) -> None:
    operator.goto("/system")
    expect(operator.locator("#running")).to_have_text("1")
    expect(operator.locator("#asleep")).to_have_text("0")
    expect(operator.get_by_label(re.compile("^Disk"))).to_be_visible()
    expect(operator.get_by_role("row", name=re.compile("pocketbase"))).to_contain_text("0.40.6")
    shot(operator, "operator-system")
    operator.goto("/nodes")  # the process driver: one node, this machine, with Carol's instance
    node = operator.get_by_role("row", name=re.compile(re.escape(socket.gethostname())))
    expect(node).to_contain_text("1 running, 0 asleep")
    shot(operator, "operator-nodes")


def test_a_user_sees_no_operator_pages(browsing: Browsing, user_api: httpx.Client) -> None:
    page = browsing.new_page()
    log_in_in_browser(page, USER)
    expect(page.get_by_role("link", name="Fleet", exact=True)).to_have_count(0)
    expect(page.get_by_role("link", name="Nodes", exact=True)).to_have_count(0)
    answer = page.goto("/fleet")
    assert answer is not None and answer.status == 403


def test_api_tokens_are_shown_once_and_revocable(operator: Page, server: ServeProcess) -> None:
    operator.goto("/account")
    expect(operator.get_by_text("0 of 10 instances used")).to_be_visible()
    operator.get_by_label("Token name").fill("ci")
    operator.get_by_role("button", name="Create token").click()
    token = operator.get_by_label("New token").input_value()
    assert token.startswith("pf_")
    shot(operator, "account-token-created")
    with server.client(token) as api:
        assert api.get("/api/accounts/me").json()["email"] == OPERATOR

    operator.goto("/account")
    expect(operator.get_by_label("New token")).to_have_count(0)
    operator.get_by_role("button", name="Revoke ci").click()
    operator.wait_for_url("**/account?notice=token_revoked")
    with server.client(token) as api:
        assert api.get("/api/accounts/me").status_code == 401


def test_password_change(operator: Page, browsing: Browsing) -> None:
    other = browsing.new_page()
    log_in_in_browser(other, OPERATOR)
    operator.goto("/account")
    operator.get_by_label("Current password").fill("wrong-password-here")
    operator.get_by_label("New password").fill("a-brand-new-password")
    operator.get_by_role("button", name="Change password").click()
    expect(operator.locator("#e-current_password")).to_contain_text("wrong")

    operator.get_by_label("Current password").fill(PASSWORD)
    operator.get_by_label("New password").fill("a-brand-new-password")
    operator.get_by_role("button", name="Change password").click()
    operator.wait_for_url("**/account?notice=password_changed")
    shot(operator, "account-password-changed")
    # this session stays; the other one is logged out; the new password logs in
    other.goto("/instances")
    other.wait_for_url("**/login?**")
    log_in_in_browser(other, OPERATOR, "a-brand-new-password")
