"""crontab(5) in UTC as APScheduler 3 triggers, with crontab's own meaning of the day of week.

APScheduler 3 numbers the days of the week from Monday (0) where crontab numbers them from
Sunday (0, and 7 again); `CronTrigger.from_crontab("0 3 * * 0")` fires on Mondays. Day names
mean the same to both, so `cron_trigger` rewrites the day-of-week field as the explicit list
of names crontab means (`1-5` → `mon,tue,wed,thu,fri`; `*/2` → `sun,tue,thu,sat`) and leaves
the other fields to APScheduler. Used by every schedule of the control plane (snapshots,
jobs). Imports nothing of pocketfleet.

A trigger is built once per crontab text and shared (`cron_trigger` is cached: building one
compiles every field, and the fleet's overview asks for the next fire of every instance's
schedule); APScheduler never changes a trigger once built, and neither may its callers.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC

from apscheduler.triggers.cron import CronTrigger

DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering: 0 = Sunday
_DAY_ITEM = re.compile(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?")


class CrontabError(ValueError):
    """A crontab field APScheduler would misread or refuse; the message names the field,
    never quotes it."""


@functools.lru_cache(maxsize=4096)
def cron_trigger(cron: str) -> CronTrigger:
    """The trigger of the 5-field crontab `cron` (UTC), as crontab(5) means it. Raises
    `CrontabError` for a day of week crontab does not have, APScheduler's `ValueError` for
    the other fields."""
    words = cron.split()
    if len(words) != 5:
        raise CrontabError("a crontab has 5 fields: minute, hour, day of month, month, day of week")
    minute, hour, day, month, day_of_week = words
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=days_of_week(day_of_week.lower()),
        timezone=UTC,
    )


def _day_number(token: str) -> int:
    if token in DAYS:
        return DAYS.index(token)
    if token.isdigit() and int(token) <= 7:
        return int(token) % 7
    raise CrontabError("the day of week takes 0-7 (0 and 7: Sunday) or sun ... sat")


def days_of_week(field: str) -> str:
    """The crontab(5) day-of-week `field` as APScheduler 3 means it: `*`, or an explicit
    list of day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        match = _DAY_ITEM.fullmatch(item)
        if match is None:
            raise CrontabError("the day of week is not a crontab field")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1 or step > 7:
            raise CrontabError("a step in the day of week must be 1 to 7")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-")
            first, last = _day_number(low), _day_number(high)
            if high == "7" or (high == "sun" and first > 0):
                last = 7  # `5-7`: Friday to Sunday
            if first > last:
                raise CrontabError("a range in the day of week must go upwards")
        else:
            first = last = _day_number(span)
            if step_text:  # `1/2`: from Monday on, every second day
                last = 6
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(DAYS[day] for day in sorted(days))
