"""Browser tests of the dashboard: real headless Chromium (Debian's `chromium`, installed by
`scripts/install-system.sh`) driven by Playwright, against a real `pocketfleet serve`.

One browser and one server per module (each module defines `server`). Every test
saves a screenshot of its key page under `tests/artifacts/` (ignored by git).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, Browsing
from tests.support.server import ServeProcess

# Waits (not assertions of speed): generous, so that a loaded machine does not fail a test.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module. Not one per session: while Playwright's sync API is alive
    the thread's event loop counts as running, which breaks any async test run meanwhile (and
    pytest gives a folder without `__init__.py` no package scope to end it with)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (scripts/install-system.sh)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browsing(browser: Browser, server: ServeProcess) -> Iterator[Browsing]:
    session = Browsing(browser, server)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(autouse=True)
def _no_console_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "browsing" in request.fixturenames:
        session: Browsing = request.getfixturevalue("browsing")
        errors, session.errors[:] = list(session.errors), []
        assert not errors, errors
