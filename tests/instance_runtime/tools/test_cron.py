"""PocketBase's cron dialect and scheduler (`instance_runtime.tools.cron`).

The refusals are PocketBase 0.40.6's own messages (checked against the binary through
`PATCH /api/settings {"backups": {"cron": ...}}`, which shows them capitalised with a period).
The scheduler runs its real loop on a clock shifted to just before a minute, so a tick "at the
minute" comes in well under a second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instance_runtime.tools.cron import Cron, CronError, Schedule

ALL_MINUTES = frozenset(range(60))
ALL_HOURS = frozenset(range(24))


def at(text: str, tz: timezone = UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


# ---------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("expr", "expression", "minutes", "hours", "days", "months", "dows"),
    [
        ("* * * * *", "* * * * *", ALL_MINUTES, ALL_HOURS, range(1, 32), range(1, 13), range(7)),
        ("*/2 */3 */5 */4 */2", "*/2 */3 */5 */4 */2", range(0, 60, 2), range(0, 24, 3),
         {1, 6, 11, 16, 21, 26, 31}, {1, 5, 9}, {0, 2, 4, 6}),
        ("1,2,5,7,40-50/2 * * * *", "1,2,5,7,40-50/2 * * * *", {1, 2, 5, 7, 40, 42, 44, 46, 48, 50},
         ALL_HOURS, range(1, 32), range(1, 13), range(7)),
        ("59 23 31 12 6", "59 23 31 12 6", {59}, {23}, {31}, {12}, {6}),
        ("0-59/31 * * * 0-6/6", "0-59/31 * * * 0-6/6", {0, 31}, ALL_HOURS, range(1, 32),
         range(1, 13), {0, 6}),
        ("+5 * * * *", "+5 * * * *", {5}, ALL_HOURS, range(1, 32), range(1, 13), range(7)),
        ("*/59 * * * *", "*/59 * * * *", {0, 59}, ALL_HOURS, range(1, 32), range(1, 13),
         range(7)),
        ("@yearly", "0 0 1 1 *", {0}, {0}, {1}, {1}, range(7)),
        ("@annually", "0 0 1 1 *", {0}, {0}, {1}, {1}, range(7)),
        ("@monthly", "0 0 1 * *", {0}, {0}, {1}, range(1, 13), range(7)),
        ("@weekly", "0 0 * * 0", {0}, {0}, range(1, 32), range(1, 13), {0}),
        ("@daily", "0 0 * * *", {0}, {0}, range(1, 32), range(1, 13), range(7)),
        ("@midnight", "0 0 * * *", {0}, {0}, range(1, 32), range(1, 13), range(7)),
        ("@hourly", "0 * * * *", {0}, ALL_HOURS, range(1, 32), range(1, 13), range(7)),
    ],
)  # fmt: skip
def test_valid_expressions(
    expr: str,
    expression: str,
    minutes: Iterable[int],
    hours: Iterable[int],
    days: Iterable[int],
    months: Iterable[int],
    dows: Iterable[int],
) -> None:
    schedule = Schedule.parse(expr)
    assert schedule.expression == expression  # a macro is listed expanded, as PocketBase does
    assert schedule.minutes == frozenset(minutes)
    assert schedule.hours == frozenset(hours)
    assert schedule.days == frozenset(days)
    assert schedule.months == frozenset(months)
    assert schedule.days_of_week == frozenset(dows)


SEGMENTS = (
    "invalid cron expression - must be a valid macro or to have exactly 5 space separated segments"
)
OUTSIDE = "invalid segment value - must be between the min and max of the segment"
STEP_ONLY = "invalid segment step - step > 1 could be used only with the wildcard or range format"


def step(high: int) -> str:
    return f"invalid segment step boundary - the step must be between 1 and the {high}"


def atoi(text: str, why: str = "invalid syntax") -> str:
    return f"strconv.Atoi: parsing {text}: {why}"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("invalid", SEGMENTS),
        ("", SEGMENTS),
        ("* * * *", SEGMENTS),
        ("* * * * * *", SEGMENTS),
        ("@every 1h", SEGMENTS),
        ("@DAILY", SEGMENTS),
        ("@daily ", SEGMENTS),
        ("2/3 * * * *", STEP_ONLY),
        ("**/2 * * * *", STEP_ONLY),
        ("60 * * * *", OUTSIDE),
        ("* 24 * * *", OUTSIDE),
        ("* * 0 * *", OUTSIDE),
        ("* * 32 * *", OUTSIDE),
        ("* * * 0 *", OUTSIDE),
        ("* * * 13 *", OUTSIDE),
        ("* * * * 7", OUTSIDE),
        ("-1 * * * *", atoi('""')),
        ("* * * * -1", atoi('""')),
        ("1- * * * *", atoi('""')),
        (" * * * *", atoi('""')),
        ("*  * * *", atoi('""')),
        (",* * * * *", atoi('""')),
        ("a * * * *", atoi('"a"')),
        ("* * * * mon", atoi('"mon"')),
        ("*/x * * * *", atoi('"x"')),
        ("0x1 * * * *", atoi('"0x1"')),
        ("1_0 * * * *", atoi('"1_0"')),
        ("\u00e9 * * * *", atoi('"\u00e9"')),
        ("1\u00a02 * * * *", atoi('"1\\u00a02"')),
        ("* * * * *\t", atoi('"*\\t"')),
        ("99999999999999999999 * * * *", atoi('"99999999999999999999"', "value out of range")),
        ("*/0 * * * *", step(59)),
        ("*/60 * * * *", step(59)),
        ("*/-1 * * * *", step(59)),
        ("* * 1-31/32 * *", step(31)),
        ("* * * * 0-6/7", step(6)),
        ("1/2/3 * * * *", "invalid segment step format - must be in the format */n or 1-30/n"),
        ("1-2-3 * * * *", "invalid segment range format - the range must have 1 or 2 parts"),
        ("5-3 * * * *", "invalid segment range maximum - must be between 5 and 59"),
        ("* 3-24 * * *", "invalid segment range maximum - must be between 3 and 23"),
        ("* * 0-5 * *", "invalid segment range minimum - must be between 1 and 31"),
    ],
)  # fmt: skip
def test_invalid_expressions(expr: str, message: str) -> None:
    with pytest.raises(CronError) as refused:
        Schedule.parse(expr)
    assert str(refused.value) == message


# ---------------------------------------------------------------------------------- due / next


def test_both_day_fields_must_match() -> None:
    """Unlike crontab(5), a day of month AND a day of week: `13 * 5` is Friday the 13th only."""
    friday13 = Schedule.parse("0 0 13 * 5")
    assert friday13.is_due(at("2026-02-13 00:00"))  # a Friday
    assert not friday13.is_due(at("2026-01-13 00:00"))  # a Tuesday
    assert not friday13.is_due(at("2026-02-20 00:00"))  # a Friday, not the 13th
    assert not friday13.is_due(at("2026-02-13 00:01"))
    sunday = Schedule.parse("@weekly")
    assert sunday.is_due(at("2026-12-06 00:00")) and not sunday.is_due(at("2026-12-07 00:00"))


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/15 * * * *", "2026-05-09 10:07:30", "2026-05-09 10:15"),
        ("*/15 * * * *", "2026-05-09 10:15:00", "2026-05-09 10:30"),  # strictly after
        ("*/15 * * * *", "2026-05-09 23:59:59", "2026-05-10 00:00"),
        ("0 * * * *", "2026-05-09 10:00:00.5", "2026-05-09 11:00"),
        ("@daily", "2026-12-31 12:00", "2027-01-01 00:00"),
        ("@yearly", "2026-12-31 23:59", "2027-01-01 00:00"),
        ("@weekly", "2026-12-02 12:00", "2026-12-06 00:00"),
        ("@monthly", "2026-01-31 00:00", "2026-02-01 00:00"),
        ("0 0 31 * *", "2026-04-01 00:00", "2026-05-31 00:00"),  # April has no 31st
        ("0 0 29 2 *", "2025-03-01 00:00", "2028-02-29 00:00"),  # the next leap day
        ("0 0 29 2 1", "2026-01-01 00:00", "2044-02-29 00:00"),  # a leap day that is a Monday
        ("0 0 13 * 5", "2026-01-01 00:00", "2026-02-13 00:00"),
        ("30 2 * 6 *", "2026-07-01 00:00", "2027-06-01 02:30"),
        ("0 0 30 2 *", "2026-01-01 00:00", None),  # never
        ("0 0 31 4,6,9,11 *", "2026-01-01 00:00", None),
    ],
)  # fmt: skip
def test_next_run(expr: str, after: str, expected: str | None) -> None:
    found = Schedule.parse(expr).next_after(at(after))
    assert found == (at(expected) if expected else None)


def test_next_run_keeps_the_time_zone() -> None:
    plus2 = timezone(timedelta(hours=2))
    found = Schedule.parse("0 9 * * *").next_after(at("2026-05-09 10:00", plus2))
    assert found == at("2026-05-10 09:00", plus2) and found.utcoffset() == timedelta(hours=2)


def _brute_next(schedule: Schedule, moment: datetime, minutes: int) -> datetime | None:
    probe = moment.replace(second=0, microsecond=0)
    for _ in range(minutes):
        probe += timedelta(minutes=1)
        if schedule.is_due(probe):
            return probe
    return None


_field = st.one_of(
    st.just("*"),
    st.integers(0, 5).map(str),
    st.tuples(st.integers(0, 3), st.integers(3, 6)).map(lambda r: f"{r[0]}-{r[1]}"),
    st.integers(1, 5).map(lambda s: f"*/{s}"),
)


@settings(max_examples=150, deadline=None)
@given(
    minute=st.one_of(st.just("*"), st.integers(0, 59).map(str), st.just("*/7"), st.just("5-50/9")),
    hour=st.one_of(st.just("*"), st.integers(0, 23).map(str), st.just("*/5")),
    day=st.one_of(st.just("*"), st.integers(1, 31).map(str), st.just("1-10/3")),
    dow=st.one_of(st.just("*"), st.integers(0, 6).map(str)),
    start=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)),
)
def test_next_run_is_the_first_due_minute(
    minute: str, hour: str, day: str, dow: str, start: datetime
) -> None:
    """Against a minute-by-minute search over 45 days (for any month: `*`)."""
    schedule = Schedule.parse(f"{minute} {hour} {day} * {dow}")
    moment = start.replace(tzinfo=UTC)
    found = schedule.next_after(moment)
    searched = _brute_next(schedule, moment, 45 * 24 * 60)
    if searched is not None:
        assert found == searched
    else:
        assert found is None or found > moment + timedelta(days=45)


# ---------------------------------------------------------------------------------- jobs


def test_jobs_are_added_replaced_and_removed_in_order() -> None:
    cron = Cron()
    cron.add("b", "@hourly", lambda: None)
    cron.add("a", "* * * * *", lambda: None)
    cron.add("c", "@daily", lambda: None)
    assert [(j.id, j.expression) for j in cron.jobs()] == [
        ("b", "0 * * * *"), ("a", "* * * * *"), ("c", "0 0 * * *"),
    ]  # fmt: skip
    cron.add("b", "5 4 * * *", lambda: None)  # replaced, and moved last (as PocketBase)
    assert [(j.id, j.expression) for j in cron.jobs()] == [
        ("a", "* * * * *"), ("c", "0 0 * * *"), ("b", "5 4 * * *"),
    ]  # fmt: skip
    with pytest.raises(CronError):
        cron.add("a", "nope", lambda: None)
    assert [j.id for j in cron.jobs()] == ["a", "c", "b"]  # a refused job changes nothing
    cron.remove("c")
    cron.remove("missing")
    assert [j.id for j in cron.jobs()] == ["a", "b"] and cron.job("b") is not None
    cron.remove_all()
    assert cron.jobs() == [] and cron.job("b") is None


def test_run_now_runs_in_a_thread_of_its_own() -> None:
    cron = Cron()
    ran: list[str] = []
    done = threading.Event()

    def job() -> None:
        ran.append(threading.current_thread().name)
        done.set()

    cron.add("report", "0 0 1 1 *", job)
    assert cron.run("missing") is False
    assert cron.run("report") is True
    assert done.wait(5)
    assert ran == ["cron-report"]


def test_an_async_job_runs_to_completion() -> None:
    cron = Cron()
    done = threading.Event()

    async def job() -> None:
        await asyncio.sleep(0.01)
        done.set()

    cron.add("async", "* * * * *", job)
    assert cron.run("async") and done.wait(5)


def test_run_due_runs_only_the_due_jobs_and_survives_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cron = Cron(timezone=timezone(timedelta(hours=2)))
    ran: list[str] = []
    release = threading.Event()

    def broken() -> None:
        raise RuntimeError("boom")

    cron.add("broken", "* * * * *", broken)
    cron.add("slow", "* * * * *", lambda: release.wait(10))
    cron.add("ten", "0 10 * * *", lambda: ran.append("ten"))  # 10:00 at UTC+2
    cron.add("eight", "0 8 * * *", lambda: ran.append("eight"))
    with caplog.at_level(logging.ERROR, logger="instance_runtime"):
        threads = cron.run_due(at("2026-05-09 08:00"))  # UTC
        assert len(threads) == 3
        for thread in threads:
            if thread.name != "cron-slow":
                thread.join(5)
    assert ran == ["ten"]  # while `slow` still runs
    assert any("cron job broken failed" in r.getMessage() for r in caplog.records)
    release.set()


# ---------------------------------------------------------------------------------- ticking


class ShiftedClock:
    """The real clock moved so that it reads `lead` seconds before `minute` right now."""

    def __init__(self, minute: datetime, lead: float) -> None:
        self.offset = minute.timestamp() - lead - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset


def test_the_scheduler_runs_a_job_at_the_minute() -> None:
    minute = at("2031-03-04 10:00")
    clock = ShiftedClock(minute, lead=0.4)
    cron = Cron(clock=clock)
    seen: list[tuple[str, float]] = []
    done = threading.Event()

    def broken() -> None:
        raise RuntimeError("boom")

    cron.add("broken", "* * * * *", broken)

    def at_ten() -> None:
        seen.append(("at-ten", clock()))
        done.set()

    cron.add("at-ten", "0 10 * * *", at_ten)
    cron.add("at-ten-past-one", "1 10 * * *", lambda: seen.append(("wrong", clock())))
    cron.start()
    try:
        assert cron.has_started
        assert done.wait(5), "the job did not run at the minute"
        time.sleep(0.2)
    finally:
        cron.stop()
    assert [name for name, _ in seen] == ["at-ten"]
    assert minute.timestamp() <= seen[0][1] < minute.timestamp() + 2  # at 10:00, not before
    assert not cron.has_started


def test_start_twice_keeps_one_loop_and_stop_ends_it() -> None:
    clock = ShiftedClock(at("2031-03-04 10:00"), lead=0.3)
    cron = Cron(clock=clock)
    runs: list[float] = []
    cron.add("each", "* * * * *", lambda: runs.append(clock()))
    cron.start()
    cron.start()  # restarts: still one loop
    time.sleep(1.0)
    cron.stop()
    cron.stop()  # a no-op
    assert len(runs) == 1

    stopped = Cron(clock=ShiftedClock(at("2031-03-04 10:00"), lead=0.3))
    stopped.add("each", "* * * * *", lambda: runs.append(0.0))
    stopped.start()
    stopped.stop()  # before the minute
    time.sleep(0.6)
    assert len(runs) == 1


def test_a_shorter_interval_ticks_on_its_multiples() -> None:
    """PocketBase's `SetInterval`: every tick runs the jobs due in the minute it falls in."""
    cron = Cron(interval=0.2)
    runs: list[float] = []
    cron.add("each", "* * * * *", lambda: runs.append(time.time()))
    cron.start()
    time.sleep(0.75)
    cron.stop()
    assert 2 <= len(runs) <= 4
