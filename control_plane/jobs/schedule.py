"""Schedules of jobs: parsing, validation, APScheduler triggers and "when is the next run".

A schedule is one of:
- a 5-field crontab in UTC (`*/15 * * * *`, `30 2 * * mon-fri`), with the usual meaning of
  crontab(5): day of week 0 or 7 is Sunday, names (`jan`, `sun`) are allowed. The day of month
  and the day of week may not both be restricted (cron would run when either matches, which
  is rarely what is meant);
- `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`): the
  crontabs `0 * * * *`, `0 0 * * *`, `0 0 * * 0`, `0 0 1 * *`, `0 0 1 1 *`;
- `@every DURATION` (`@every 30s`, `@every 5m`, `@every 1h30m`; units s, m, h, d), fired on a
  grid that starts at the job's anchor (when its schedule was set), so that a restart of the
  control plane does not move it.

`parse_schedule` turns text into a `JobSchedule` (or raises `ScheduleError`, whose message
never repeats the text); `checked_schedule` also refuses schedules that fire more often than a
minimum interval, or never.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from control_plane.crontab import CrontabError, cron_trigger

MAX_TEXT = 100
MAX_INTERVAL = timedelta(days=366)
_DURATION = re.compile(r"(\d{1,9})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
# crontab(5) fields as APScheduler reads them: numbers, `*`, lists, ranges and steps only
# (APScheduler's own extensions, such as `last` or `2nd mon`, are not crontab)
_NUMERIC_FIELD = re.compile(r"[0-9*,/-]+")
_MONTH_FIELD = re.compile(r"[0-9*,/a-z-]+")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_PROBE_FIRES = 24


class ScheduleError(ValueError):
    """A schedule that cannot be parsed, fires too often, or never fires."""


@dataclass(frozen=True)
class JobSchedule:
    """A parsed schedule: `text` is its normal form (what is stored and shown); exactly one
    of `interval` (for `@every`) and `cron` (a crontab(5) in UTC, `control_plane.crontab`)
    is set."""

    text: str
    interval: timedelta | None = None
    cron: str | None = None

    def trigger(self, anchor: datetime) -> BaseTrigger:
        """The APScheduler trigger; `@every` fires at `anchor + k * interval` (k >= 1)."""
        if self.interval is not None:
            return IntervalTrigger(
                seconds=self.interval.total_seconds(), start_date=anchor, timezone=UTC
            )
        assert self.cron is not None
        return cron_trigger(self.cron)

    def next_run(self, anchor: datetime, now: datetime) -> datetime | None:
        """The first fire at or after `now` (as the scheduler computes it); None: never."""
        fire: datetime | None = self.trigger(anchor).get_next_fire_time(None, now)
        return fire

    def shortest_gap(self, now: datetime) -> timedelta | None:
        """The shortest time between two of the next fires; None if it never fires."""
        if self.interval is not None:
            return self.interval
        trigger = self.trigger(now)
        fires: list[datetime] = []
        moment = now
        for _ in range(_PROBE_FIRES):
            fire: datetime | None = trigger.get_next_fire_time(None, moment)
            if fire is None:
                break
            fires.append(fire)
            moment = fire + timedelta(seconds=1)
        if not fires:
            return None
        if len(fires) == 1:
            return MAX_INTERVAL
        return min(b - a for a, b in itertools.pairwise(fires))


def _parse_crontab(words: list[str]) -> str:
    """The crontab `words` checked and translated for APScheduler; `ScheduleError` if not."""
    minute, hour, day, month, day_of_week = (word.lower() for word in words)
    for field in (minute, hour, day):
        if not _NUMERIC_FIELD.fullmatch(field):
            raise ScheduleError(
                "minute, hour and day of month take numbers, *, lists, ranges and steps"
            )
    if not _MONTH_FIELD.fullmatch(month) or any(
        token not in _MONTHS for token in re.findall(r"[a-z]+", month)
    ):
        raise ScheduleError("the month takes 1-12 or jan ... dec")
    if day != "*" and day_of_week != "*":
        raise ScheduleError("restrict the day of month or the day of week, not both")
    cron = " ".join((minute, hour, day, month, day_of_week))
    try:
        cron_trigger(cron)
    except CrontabError as err:
        raise ScheduleError(str(err)) from None
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise ScheduleError(f"not a valid crontab ({_plain(err)})") from None
    return cron


def _plain(err: Exception) -> str:
    """APScheduler's message without the expression it quotes."""
    text = str(err)
    return re.sub(r"expression '[^']*'", "expression", text)[:200]


def parse_schedule(text: str) -> JobSchedule:
    """The schedule `text` (see the module's docstring); `ScheduleError` if it is not one."""
    if len(text) > MAX_TEXT:
        raise ScheduleError(f"a schedule has at most {MAX_TEXT} characters")
    words = text.split()
    if not words:
        raise ScheduleError("the schedule is empty")
    head = words[0].lower()
    if head == "@every":
        spec = "".join(words[1:]).lower()
        parts = _DURATION.findall(spec)
        if not parts or "".join(n + u for n, u in parts) != spec:
            raise ScheduleError("write a duration like '@every 30s', '@every 5m' or '@every 1h30m'")
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
        if seconds <= 0:
            raise ScheduleError("the interval must be positive")
        if seconds > MAX_INTERVAL.total_seconds():
            raise ScheduleError("the interval may be at most 366 days")
        return JobSchedule(f"@every {spec}", interval=timedelta(seconds=seconds))
    if head.startswith("@"):
        if head not in _ALIASES or len(words) != 1:
            raise ScheduleError(
                "known shorthands: @every DURATION, @hourly, @daily, @weekly, @monthly, @yearly"
            )
        return JobSchedule(head, cron=_parse_crontab(_ALIASES[head].split()))
    if len(words) != 5:
        raise ScheduleError(
            "use a 5-field crontab in UTC (minute hour day month weekday), "
            "@hourly, @daily or @every 30s"
        )
    cron = _parse_crontab(words)
    return JobSchedule(" ".join(word.lower() for word in words), cron=cron)


def checked_schedule(text: str, min_interval_s: float, now: datetime | None = None) -> JobSchedule:
    """`parse_schedule`, refusing schedules that never fire or fire more often than every
    `min_interval_s` seconds."""
    schedule = parse_schedule(text)
    gap = schedule.shortest_gap(now or datetime.now(UTC))
    if gap is None:
        raise ScheduleError("this schedule never fires")
    if gap.total_seconds() < min_interval_s:
        raise ScheduleError(
            f"this schedule fires every {gap.total_seconds():g} s at times; "
            f"the shortest allowed interval is {min_interval_s:g} s"
        )
    return schedule
