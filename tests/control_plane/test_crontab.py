"""crontab(5) as APScheduler triggers, day of week as crontab means it (`control_plane.crontab`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from apscheduler.triggers.cron import CronTrigger

from control_plane.backups.schedule import parse
from control_plane.crontab import CrontabError, cron_trigger, days_of_week

MONDAY = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def next_days(cron: str, count: int = 7) -> list[str]:
    trigger, moment, found = cron_trigger(cron), MONDAY, []
    for _ in range(count):
        fire = trigger.get_next_fire_time(None, moment)
        assert fire is not None
        found.append(fire.strftime("%a").lower())
        moment = fire.replace(second=1)
    return found


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("sat,sun", "sun,sat"),
        ("*", "*"),
    ],
)
def test_day_of_week_fields_mean_what_crontab_means(field: str, expected: str) -> None:
    assert days_of_week(field) == expected


def test_a_sunday_crontab_fires_on_sundays() -> None:
    assert set(next_days("0 3 * * 0", 3)) == {"sun"}
    assert set(next_days("0 3 * * 1-5", 10)) == {"mon", "tue", "wed", "thu", "fri"}


def test_a_snapshot_schedule_for_sunday_fires_on_sunday() -> None:
    schedule = parse("30 2 * * 0", "instance-1")
    assert schedule.next_after(MONDAY).strftime("%a") == "Sun"


@pytest.mark.parametrize("cron", ["0 3 * * 8", "0 3 * * 5-1", "0 3 * *", "0 3 * * mon/9"])
def test_what_crontab_does_not_have_is_refused(cron: str) -> None:
    with pytest.raises(CrontabError):
        cron_trigger(cron)


def test_a_crontab_is_built_once_and_fires_as_a_new_trigger_would() -> None:
    first = cron_trigger("17 4 * * 1-5")
    assert cron_trigger("17 4 * * 1-5") is first  # shared: built once per text
    fresh = CronTrigger(minute="17", hour="4", day_of_week="mon,tue,wed,thu,fri", timezone=UTC)
    moment = MONDAY
    for _ in range(8):
        fire = first.get_next_fire_time(None, moment)
        assert fire is not None and fire == fresh.get_next_fire_time(None, moment)
        moment = fire.replace(second=1)
    with pytest.raises(CrontabError):  # a refusal is not kept: it is refused every time
        cron_trigger("0 3 * * 8")
    with pytest.raises(CrontabError):
        cron_trigger("0 3 * * 8")
