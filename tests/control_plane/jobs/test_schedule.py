"""Schedules of jobs (`control_plane.jobs.schedule`): crontab(5) as cron means it (Sunday is
0 and 7, whatever APScheduler 3 numbers), the shorthands, `@every` on a grid from its anchor,
and the refusals (never repeating the text)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from control_plane.jobs.schedule import ScheduleError, checked_schedule, parse_schedule

# a Thursday
NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)


def next_after(text: str, now: datetime = NOW) -> datetime:
    fire = parse_schedule(text).next_run(now, now)
    assert fire is not None
    return fire


def test_every_fires_on_a_grid_from_its_anchor() -> None:
    schedule = parse_schedule("@every 2s")
    assert (schedule.text, schedule.interval) == ("@every 2s", timedelta(seconds=2))
    anchor = NOW - timedelta(seconds=5)
    assert schedule.next_run(anchor, NOW) == anchor + timedelta(seconds=6)
    # the same grid after a restart: only the anchor matters
    later = NOW + timedelta(hours=1, milliseconds=300)
    fire = schedule.next_run(anchor, later)
    assert fire is not None and (fire - anchor) % timedelta(seconds=2) == timedelta(0)


@pytest.mark.parametrize(
    ("text", "normal", "seconds"),
    [
        ("@every 30s", "@every 30s", 30),
        ("@every 5m", "@every 5m", 300),
        ("@EVERY 1h 30m", "@every 1h30m", 5400),
        ("@every 2d", "@every 2d", 172800),
    ],
)
def test_every_durations(text: str, normal: str, seconds: int) -> None:
    schedule = parse_schedule(text)
    assert schedule.text == normal
    assert schedule.interval == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*/15 * * * *", datetime(2026, 1, 1, 12, 15, tzinfo=UTC)),
        ("@hourly", datetime(2026, 1, 1, 13, 0, tzinfo=UTC)),
        ("@daily", datetime(2026, 1, 2, 0, 0, tzinfo=UTC)),
        ("@midnight", datetime(2026, 1, 2, 0, 0, tzinfo=UTC)),
        ("@weekly", datetime(2026, 1, 4, 0, 0, tzinfo=UTC)),  # Sunday
        ("@monthly", datetime(2026, 2, 1, 0, 0, tzinfo=UTC)),
        ("@yearly", datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
        ("0 9 * * 0", datetime(2026, 1, 4, 9, 0, tzinfo=UTC)),  # 0: Sunday
        ("0 9 * * 7", datetime(2026, 1, 4, 9, 0, tzinfo=UTC)),  # 7: Sunday too
        ("0 9 * * 1", datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),  # 1: Monday
        ("0 9 * * 1-5", datetime(2026, 1, 2, 9, 0, tzinfo=UTC)),  # Friday
        ("0 9 * * 6,0", datetime(2026, 1, 3, 9, 0, tzinfo=UTC)),  # Saturday
        ("0 9 * * sat-sun", datetime(2026, 1, 3, 9, 0, tzinfo=UTC)),
        ("0 9 * * */2", datetime(2026, 1, 3, 9, 0, tzinfo=UTC)),  # Sun, Tue, Thu, Sat
        ("30 2 1 jan-mar *", datetime(2026, 2, 1, 2, 30, tzinfo=UTC)),
    ],
)
def test_crontabs_mean_what_cron_means(text: str, expected: datetime) -> None:
    assert next_after(text) == expected


def test_friday_to_sunday_as_a_range_ending_in_seven() -> None:
    fires = []
    moment = NOW
    for _ in range(4):
        moment = next_after("0 0 * * 5-7", moment)
        fires.append(moment.strftime("%a"))
        moment += timedelta(seconds=1)
    assert fires == ["Fri", "Sat", "Sun", "Fri"]


def test_crontab_text_is_normalised() -> None:
    assert parse_schedule("  0   9 * *  MON-FRI ").text == "0 9 * * mon-fri"
    assert parse_schedule("@Daily").text == "@daily"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("@every", "duration"),
        ("@every 0s", "positive"),
        ("@every 5x", "duration"),
        ("@every 400d", "366 days"),
        ("@reboot", "shorthands"),
        ("* * * *", "5-field crontab"),
        ("60 * * * *", "not a valid crontab"),
        ("*/0 * * * *", "not a valid crontab"),
        ("0 0 L * *", "numbers"),
        ("0 0 * foo *", "month"),
        ("0 0 * * 8", "day of week"),
        ("0 0 * * 6-1", "upwards"),
        ("0 0 * * 1st", "day of week"),
        ("0 0 1 * 1", "not both"),
        ("0 0 30 2 *", "never fires"),
        ("x" * 101, "at most 100"),
    ],
)
def test_refusals_say_why_without_repeating_the_text(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as refused:
        checked_schedule(text, 10, NOW)
    if not text.startswith("@") and len(text) > 3:
        assert text not in str(refused.value)


def test_the_minimum_interval() -> None:
    assert checked_schedule("@every 10s", 10, NOW).interval == timedelta(seconds=10)
    with pytest.raises(ScheduleError, match="shortest allowed interval is 10 s"):
        checked_schedule("@every 9s", 10, NOW)
    with pytest.raises(ScheduleError, match="shortest allowed interval is 3600 s"):
        checked_schedule("0,30 * * * *", 3600, NOW)
    assert checked_schedule("@every 2s", 1, NOW).text == "@every 2s"
    assert checked_schedule("@hourly", 3600, NOW).text == "@hourly"
