"""Custom domains on the instance page: add one (a bad one is refused in the form), see what
to publish, verify it (the HTTP token, answered by pocketfleet itself), remove it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import Browsing, shot, sign_up_in_browser
from tests.support.server import ServeProcess, running_server

NAME = "shop"
DOMAIN = "www.shop.test"


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    # verification asks this server itself for the token (embedded proxy: PF_HTTP's port)
    env = {
        "PF_DOMAIN_RESOLVE": json.dumps({DOMAIN: "127.0.0.1"}),
        "PF_DOMAIN_HTTP_VERIFICATION": "true",  # off by default: DNS TXT only
    }
    with running_server(env=env) as server:
        yield server


@pytest.fixture(scope="module")
def page(browsing: Browsing) -> Page:
    return browsing.new_page()


def test_add_verify_and_remove_a_domain(page: Page, server: ServeProcess) -> None:
    sign_up_in_browser(page, "dee@example.com")
    page.get_by_label("Instance name").fill(NAME)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(f"**/instances/{NAME}?notice=created")

    domain = page.get_by_role("textbox", name="Domain")
    domain.fill("not a domain")
    page.get_by_role("button", name="Add domain").click()
    expect(page.locator("#e-domain")).to_contain_text("not a valid domain name")

    page.get_by_role("textbox", name="Domain").fill(DOMAIN)
    page.get_by_role("button", name="Add domain").click()
    page.wait_for_url(f"**/instances/{NAME}?notice=domain_added*")
    row = page.locator("#domains tbody tr")
    expect(row).to_contain_text("pending")
    expect(row).to_contain_text(f"CNAME {DOMAIN} → {NAME}.localhost")
    expect(row).to_contain_text(f"TXT _pocketfleet.{DOMAIN} = pocketfleet-verify=")
    shot(page, "instance-domains-pending")

    page.get_by_role("button", name=f"Verify {DOMAIN}").click()
    page.wait_for_url(f"**/instances/{NAME}?notice=domain_verified*")
    expect(page.locator("#domains tbody tr")).to_contain_text("verified (http)")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Remove {DOMAIN}").click()
    page.wait_for_url(f"**/instances/{NAME}?notice=domain_removed*")
    expect(page.locator("#domains")).to_have_count(0)
