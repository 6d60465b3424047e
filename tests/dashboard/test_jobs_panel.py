"""Scheduled jobs on the instance page: add one (a bad schedule is refused in the form), see it
with its next run and its runs as they come, pause and resume it, delete it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import SLOW_MACHINE, Browsing, shot, sign_up_in_browser
from tests.support.server import ServeProcess, running_server

NAME = "cron"


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with running_server(env={"PF_JOB_MIN_INTERVAL_S": "2", **SLOW_MACHINE}) as server:
        yield server


@pytest.fixture(scope="module")
def page(browsing: Browsing) -> Page:
    return browsing.new_page()


def test_add_pause_resume_and_delete_a_job(page: Page, server: ServeProcess) -> None:
    sign_up_in_browser(page, "cron@example.com")
    page.get_by_label("Instance name").fill(NAME)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(f"**/instances/{NAME}?notice=created")
    expect(page.locator("#jobs-h ~ .empty")).to_contain_text("No scheduled jobs")

    page.get_by_label("Job schedule").fill("@every 1s")
    page.get_by_label("Path").fill("/api/health")
    page.get_by_role("button", name="Add job").click()
    expect(page.locator("#e-job_schedule")).to_contain_text("shortest allowed interval is 2 s")
    expect(page.get_by_label("Path")).to_have_value("/api/health")  # what was typed stays

    page.get_by_label("Job schedule").fill("@every 2s")
    page.get_by_role("button", name="Add job").click()
    row = page.locator("#jobs tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("@every 2s")
    expect(row).to_contain_text("GET /api/health")

    # runs show once they happened (the page is read again)
    for _ in range(60):
        page.reload()
        if page.locator("#job-runs tbody tr").count():
            break
        page.wait_for_timeout(500)
    expect(page.locator("#job-runs tbody tr").first).to_contain_text("200")
    expect(page.locator("#job-runs tbody tr").first).to_contain_text("API is healthy")
    shot(page, "instance-jobs")

    page.get_by_role("button", name="Pause job").click()
    expect(page.locator("#jobs tbody tr")).to_contain_text("paused")
    page.get_by_role("button", name="Resume job").click()
    expect(page.locator("#jobs tbody tr")).not_to_contain_text("paused")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete job").click()
    expect(page.locator("#jobs")).to_have_count(0)
    expect(page.locator("#jobs-h ~ .empty")).to_contain_text("No scheduled jobs")
