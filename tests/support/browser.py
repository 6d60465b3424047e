"""Helpers of the dashboard's browser tests: Chromium settings, browser contexts that record
console errors, screenshots under `tests/artifacts/`, and the usual steps of a person."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

from tests.support.server import ServeProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PASSWORD = "correct-horse-battery"
# Settings of the servers these tests run: an instance start may take long on a loaded machine.
SLOW_MACHINE = {"PF_START_TIMEOUT_S": "60"}


def apex(server: ServeProcess) -> str:
    """The dashboard's address, as a person types it."""
    return f"http://localhost:{server.port}"


class Browsing:
    """Browser contexts (one per person) on the dashboard of `server`, each recording the
    console errors of dashboard pages: a CSP violation or a script error fails the test."""

    def __init__(self, browser: Browser, server: ServeProcess) -> None:
        self.browser = browser
        self.server = server
        self.errors: list[str] = []
        self._contexts: list[BrowserContext] = []

    def new_page(self, **options: object) -> Page:
        context = self.browser.new_context(base_url=apex(self.server), **options)  # type: ignore[arg-type]
        context.set_default_timeout(30_000)
        self._contexts.append(context)
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        return page

    def _console(self, message: ConsoleMessage) -> None:
        url = message.location.get("url", "")
        if message.text.startswith("Failed to load resource"):
            return  # an HTTP error status: the tests check the statuses they expect
        if message.type == "error" and url.startswith(apex(self.server)):
            self.errors.append(f"{url}: {message.text}")

    def close(self) -> None:
        for context in self._contexts:
            context.close()


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_up_in_browser(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/instances?notice=welcome")


def log_in_in_browser(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/instances")


def control_db(server: ServeProcess) -> Callable[[str, tuple[object, ...]], None]:
    """Run one statement on the server's SQLite control DB (test set-up only)."""

    def run(sql: str, params: tuple[object, ...]) -> None:
        with sqlite3.connect(server.data_dir / "control.db") as db:
            db.execute(sql, params)

    return run
