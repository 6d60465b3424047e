"""Snapshot schedules: parsing, validation, APScheduler triggers and "when is the next one due".

A schedule is one of:
- a 5-field crontab in UTC (`30 2 * * *`), as crontab(5) means it (`control_plane.crontab`:
  day of week 0 and 7 are Sunday);
- `@hourly`, `@daily`, `@weekly`: once per period, at a minute derived from the instance id, so
  that a fleet's snapshots spread over the period instead of all starting at once;
- `@every DURATION` (`@every 6h`, `@every 90m`, `@every 1h30m`; units s, m, h, d).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from control_plane.crontab import cron_trigger

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PROBE_FIRES = 24


class ScheduleError(ValueError):
    """A schedule that cannot be parsed, or fires too often."""


@dataclass(frozen=True)
class Schedule:
    text: str
    interval: timedelta | None  # for @every
    cron: str | None  # the crontab, with spread minutes filled in

    def trigger(self, start: datetime | None = None) -> BaseTrigger:
        if self.interval is not None:
            return IntervalTrigger(seconds=self.interval.total_seconds(), start_date=start)
        assert self.cron is not None
        return cron_trigger(self.cron)

    def next_after(self, moment: datetime) -> datetime:
        """The first time this schedule fires after `moment`."""
        if self.interval is not None:
            return moment + self.interval
        assert self.cron is not None
        trigger = cron_trigger(self.cron)
        fire: datetime | None = trigger.get_next_fire_time(None, moment)
        assert fire is not None
        if fire <= moment:
            fire = self.next_after(moment + timedelta(seconds=1))
        return fire

    def shortest_gap(self, now: datetime) -> timedelta:
        """The shortest time between two of the next fires (for the minimum-interval rule)."""
        if self.interval is not None:
            return self.interval
        fires = [self.next_after(now)]
        for _ in range(_PROBE_FIRES):
            fires.append(self.next_after(fires[-1]))
        return min(b - a for a, b in itertools.pairwise(fires))


def _spread(instance_id: str, modulo: int) -> int:
    return int.from_bytes(hashlib.sha256(instance_id.encode()).digest()[:4], "big") % modulo


def parse(text: str, instance_id: str) -> Schedule:
    """The schedule `text` for the instance `instance_id`; `ScheduleError` if invalid."""
    words = text.strip().split()
    if not words:
        raise ScheduleError("the schedule is empty")
    head = words[0].lower()
    if head == "@every":
        spec = "".join(words[1:]).lower()
        parts = _DURATION.findall(spec)
        if not parts or "".join(n + u for n, u in parts) != spec:
            raise ScheduleError(f"{text!r}: write a duration like '@every 6h' or '@every 90m'")
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
        if seconds <= 0:
            raise ScheduleError(f"{text!r}: the interval must be positive")
        return Schedule(text.strip(), timedelta(seconds=seconds), None)
    if head in ("@hourly", "@daily", "@weekly") and len(words) == 1:
        minute_of_day = _spread(instance_id, 24 * 60)
        minute, hour = minute_of_day % 60, minute_of_day // 60
        cron = {
            "@hourly": f"{minute} * * * *",
            "@daily": f"{minute} {hour} * * *",
            "@weekly": f"{minute} {hour} * * {_spread(instance_id[::-1], 7)}",
        }[head]
        return Schedule(head, None, cron)
    if len(words) != 5:
        raise ScheduleError(
            f"{text!r}: use a 5-field crontab (UTC), @hourly, @daily, @weekly or @every 6h"
        )
    try:
        cron_trigger(" ".join(words))
    except ValueError as err:  # CrontabError among them
        raise ScheduleError(f"{text!r}: {err}") from err
    return Schedule(" ".join(words), None, " ".join(words))


def validate_for_tenant(text: str, instance_id: str, min_interval_s: int) -> Schedule:
    """`parse`, also refusing schedules that fire more often than every `min_interval_s`."""
    schedule = parse(text, instance_id)
    gap = schedule.shortest_gap(datetime.now(UTC))
    if gap < timedelta(seconds=min_interval_s):
        raise ScheduleError(
            f"{text!r} fires every {int(gap.total_seconds())} s at times; "
            f"the shortest allowed interval is {min_interval_s} s"
        )
    return schedule
