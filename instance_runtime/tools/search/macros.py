"""Date/time identifier macros (`@now`, `@todayStart`, `@month`, ...), all in UTC.

Dates are strings in PocketBase's storage format (`2024-01-02 03:04:05.678Z`); `@second`,
`@minute`, `@hour`, `@day`, `@month`, `@weekday` (0 = Sunday) and `@year` are integers.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def format_date(value: datetime) -> str:
    """`value` (made UTC) as `YYYY-MM-DD HH:MM:SS.sssZ`."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _day_end(d: datetime) -> datetime:
    return d.replace(hour=23, minute=59, second=59, microsecond=999999)


def _day_start(d: datetime) -> datetime:
    return d.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_end(d: datetime) -> datetime:
    last = calendar.monthrange(d.year, d.month)[1]
    return _day_end(d.replace(day=last))


MACROS: dict[str, Callable[[datetime], str | int]] = {
    "@now": lambda n: format_date(n),
    "@yesterday": lambda n: format_date(n - timedelta(days=1)),
    "@tomorrow": lambda n: format_date(n + timedelta(days=1)),
    "@second": lambda n: n.second,
    "@minute": lambda n: n.minute,
    "@hour": lambda n: n.hour,
    "@day": lambda n: n.day,
    "@month": lambda n: n.month,
    "@weekday": lambda n: (n.weekday() + 1) % 7,
    "@year": lambda n: n.year,
    "@todayStart": lambda n: format_date(_day_start(n)),
    "@todayEnd": lambda n: format_date(_day_end(n)),
    "@monthStart": lambda n: format_date(_day_start(n.replace(day=1))),
    "@monthEnd": lambda n: format_date(_month_end(n)),
    "@yearStart": lambda n: format_date(_day_start(n.replace(month=1, day=1))),
    "@yearEnd": lambda n: format_date(_day_end(n.replace(month=12, day=31))),
}


def macro_value(name: str, now: datetime | None = None) -> str | int | None:
    """The value of macro `name` at `now` (default: the current time; naive means UTC), or None
    if `name` is not a macro."""
    func = MACROS.get(name)
    if func is None:
        return None
    moment = now or datetime.now(UTC)
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return func(moment)
