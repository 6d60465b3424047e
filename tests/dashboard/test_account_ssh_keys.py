"""The account page's SSH keys in the browser: the SFTP host key fingerprint, adding a key
(and a refused one, with its reason beside the field), removing one."""

from __future__ import annotations

from collections.abc import Iterator

import asyncssh
import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import SLOW_MACHINE, Browsing, shot, sign_up_in_browser
from tests.support.ports import free_port
from tests.support.server import ServeProcess, running_server

EMAIL = "keys@example.com"


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with running_server(env={"PF_SFTP": f"127.0.0.1:{free_port()}", **SLOW_MACHINE}) as server:
        yield server


@pytest.fixture(scope="module")
def page(browsing: Browsing) -> Page:
    page = browsing.new_page()
    sign_up_in_browser(page, EMAIL)
    return page


def public_key(alg: str = "ssh-ed25519", **options: int) -> str:
    key = asyncssh.generate_private_key(alg, comment="dana@laptop", **options)
    return key.export_public_key("openssh").decode("ascii").strip()


def test_add_and_remove_a_key(page: Page, server: ServeProcess) -> None:
    page.goto("/account")
    fingerprint = page.locator("#ssh-host-fingerprint")
    expect(fingerprint).to_contain_text("SHA256:")
    assert (server.data_dir / "ssh_host_ed25519_key").is_file()

    page.get_by_label("Public key").fill(public_key())
    page.get_by_role("button", name="Add key").click()
    expect(page.get_by_role("status")).to_contain_text("Key added")
    row = page.get_by_role("row", name="dana@laptop")
    expect(row).to_contain_text("all your instances")
    shot(page, "account-ssh-key-added")

    page.get_by_role("button", name="Remove key dana@laptop").click()
    page.wait_for_url("**/account#ssh-keys-h")
    expect(page.get_by_role("row", name="dana@laptop")).to_have_count(0)


def test_a_refused_key_says_why_beside_the_field(page: Page) -> None:
    page.goto("/account")
    small = public_key("ssh-rsa", key_size=2048)
    page.get_by_label("Public key").fill(small)
    page.get_by_label("Key name").fill("old rsa")
    page.get_by_role("button", name="Add key").click()
    expect(page.locator("#e-ssh_public_key")).to_contain_text("3072")
    expect(page.get_by_label("Key name")).to_have_value("old rsa")  # the form is kept

    page.get_by_label("Public key").fill(public_key())
    page.get_by_label("Only these instances").fill("nosuchapp")
    page.get_by_role("button", name="Add key").click()
    expect(page.locator("#e-ssh_instances")).to_contain_text("no instance named")
    shot(page, "refusal-ssh-key")
