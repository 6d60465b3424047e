"""PocketBase's cron (`tools/cron`): schedule expressions and a scheduler that ticks every minute.

Contract:

- `Schedule.parse(expr)` reads an expression as PocketBase 0.40 does: a macro (`@yearly` /
  `@annually`, `@monthly`, `@weekly`, `@daily` / `@midnight`, `@hourly`) or exactly 5 segments
  separated by single spaces (minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of
  week 0-6 with Sunday 0), each a comma separated list of `*`, `N`, `A-B`, `*/S` or `A-B/S`.
  No names, no `7` for Sunday, no `@every`. A bad expression raises `CronError` with
  PocketBase's message (numbers that do not parse get Go's `strconv.Atoi` message).
  `schedule.expression` is the expression with a macro expanded (what PocketBase lists).
- `schedule.is_due(moment)`: every one of the five fields matches `moment` (PocketBase requires
  day of month AND day of week, unlike crontab(5)'s OR). `schedule.next_after(moment)`: the
  first whole minute strictly after `moment`, in its time zone, that is due; None if never
  (e.g. `0 0 30 2 *`).
- `Cron(timezone=UTC, interval=60.0, clock=time.time)`: `add(id, expr, fn)` registers a job
  (replacing, and moving to the end, one with the same id; `CronError` for a bad expression),
  `remove(id)`, `remove_all()`, `jobs()` (in registration order), `job(id)`. `start()` (again:
  restart) runs a daemon thread that wakes on every multiple of `interval` seconds of `clock()`
  (so every minute at :00, as PocketBase) and starts each job due at that moment, each in a
  thread of its own: a slow job delays nothing, a job that raises is logged and the others go
  on. Ticks missed (a suspended machine, a clock jump) are dropped, as Go's ticker drops them.
  `stop()` (idempotent) ends the loop; running jobs finish on their own. `run(id)` starts one
  job now, whatever its schedule (False for an unknown id). A job's function may also return
  an awaitable: it is then run to completion on an event loop of the job's thread.

Why not a library: PocketBase's dialect is not crontab(5) (AND of the day fields, Sunday only
0, no names, its own error messages, the macro expanded in listings), which croniter, cronsim
and APScheduler's CronTrigger all implement; the parser is a few dozen lines.
"""

from __future__ import annotations

import asyncio
import calendar
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

log = logging.getLogger("instance_runtime")

JobFn = Callable[[], Any]

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_GREGORIAN_CYCLE = 400  # years after which the calendar (and weekdays) repeat


class CronError(ValueError):
    """A cron expression that PocketBase refuses; the message is PocketBase's."""


def _go_quote(text: str) -> str:
    """`text` quoted as Go's `strconv.Quote` does (as `strconv.Atoi` errors show it)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
               "\r": "\\r", "\t": "\\t", "\v": "\\v"}  # fmt: skip
    out = []
    for char in text:
        code = ord(char)
        if char in escapes:
            out.append(escapes[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _atoi(text: str) -> int:
    """Go's `strconv.Atoi`: an optional sign and ASCII digits, within 64 bits."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise CronError(f"strconv.Atoi: parsing {_go_quote(text)}: invalid syntax")
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise CronError(f"strconv.Atoi: parsing {_go_quote(text)}: value out of range")
    return value


def _segment(segment: str, low: int, high: int) -> frozenset[int]:
    slots: set[int] = set()
    for part in segment.split(","):
        step_parts = part.split("/")
        if len(step_parts) == 1:
            step = 1
        elif len(step_parts) == 2:
            step = _atoi(step_parts[1])
            if step < 1 or step > high:
                raise CronError(
                    f"invalid segment step boundary - the step must be between 1 and the {high}"
                )
        else:
            raise CronError("invalid segment step format - must be in the format */n or 1-30/n")
        if step_parts[0] == "*":
            first, last = low, high
        else:
            range_parts = step_parts[0].split("-")
            if len(range_parts) == 1:
                if step != 1:
                    raise CronError(
                        "invalid segment step - step > 1 could be used only with the wildcard "
                        "or range format"
                    )
                first = _atoi(range_parts[0])
                if first < low or first > high:
                    raise CronError(
                        "invalid segment value - must be between the min and max of the segment"
                    )
                last = first
            elif len(range_parts) == 2:
                first = _atoi(range_parts[0])
                if first < low or first > high:
                    raise CronError(
                        f"invalid segment range minimum - must be between {low} and {high}"
                    )
                last = _atoi(range_parts[1])
                if last < first or last > high:
                    raise CronError(
                        f"invalid segment range maximum - must be between {first} and {high}"
                    )
            else:
                raise CronError("invalid segment range format - the range must have 1 or 2 parts")
        slots.update(range(first, last + 1, step))
    return frozenset(slots)


def _weekday(day: date) -> int:
    """Go's `time.Weekday`: Sunday 0 ... Saturday 6."""
    return day.isoweekday() % 7


@dataclass(frozen=True)
class Schedule:
    """See the module docstring."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    expression: str

    @classmethod
    def parse(cls, expr: str) -> Schedule:
        expr = MACROS.get(expr, expr)
        segments = expr.split(" ")
        if len(segments) != 5:
            raise CronError(
                "invalid cron expression - must be a valid macro or to have exactly 5 space "
                "separated segments"
            )
        minutes, hours, days, months, dows = (
            _segment(segment, low, high)
            for segment, (low, high) in zip(segments, _BOUNDS, strict=True)
        )
        return cls(minutes, hours, days, months, dows, expr)

    def is_due(self, moment: datetime) -> bool:
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.day in self.days
            and _weekday(moment.date()) in self.days_of_week
            and moment.month in self.months
        )

    def next_after(self, moment: datetime) -> datetime | None:
        start = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        start_day = start.date()
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        last_year = min(start.year + _GREGORIAN_CYCLE, 9999)
        for year in range(start.year, last_year + 1):
            for month in sorted(self.months):
                if (year, month) < (start.year, start.month):
                    continue
                month_days = calendar.monthrange(year, month)[1]
                for day_number in sorted(self.days):
                    if day_number > month_days:
                        break
                    day = date(year, month, day_number)
                    if day < start_day or _weekday(day) not in self.days_of_week:
                        continue
                    for hour in hours:
                        for minute in minutes:
                            found = datetime(
                                year, month, day_number, hour, minute, tzinfo=moment.tzinfo
                            )
                            if found >= start:
                                return found
        return None


@dataclass(frozen=True)
class Job:
    """A registered job: its id, its schedule and what it runs."""

    id: str
    schedule: Schedule
    fn: JobFn

    @property
    def expression(self) -> str:
        return self.schedule.expression

    def run(self) -> None:
        """Run the job in the calling thread; an awaitable result is run to completion."""
        result = self.fn()
        if inspect.isawaitable(result):
            asyncio.run(_awaited(result))


async def _awaited(awaitable: Awaitable[Any]) -> None:
    await awaitable


def _run_logged(job: Job) -> None:
    try:
        job.run()
    except Exception:
        log.exception("cron job %s failed", job.id)


class Cron:
    """See the module docstring."""

    def __init__(
        self,
        *,
        timezone: tzinfo = UTC,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.timezone = timezone
        self.interval = interval
        self._clock = clock
        self._jobs: dict[str, Job] = {}  # insertion ordered: registration order
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ jobs
    def add(self, job_id: str, expr: str, fn: JobFn) -> Job:
        schedule = Schedule.parse(expr)
        job = Job(job_id, schedule, fn)
        with self._lock:
            self._jobs.pop(job_id, None)
            self._jobs[job_id] = job
        return job

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def remove_all(self) -> None:
        with self._lock:
            self._jobs.clear()

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def run(self, job_id: str) -> bool:
        """Start the job `job_id` now in a thread of its own; False if there is no such job."""
        job = self.job(job_id)
        if job is None:
            return False
        self._spawn(job)
        return True

    def run_due(self, moment: datetime) -> list[threading.Thread]:
        """Start every job due at `moment` (in `timezone`), each in its own thread."""
        local = moment.astimezone(self.timezone)
        return [self._spawn(job) for job in self.jobs() if job.schedule.is_due(local)]

    @staticmethod
    def _spawn(job: Job) -> threading.Thread:
        thread = threading.Thread(
            target=_run_logged, args=(job,), name=f"cron-{job.id}", daemon=True
        )
        thread.start()
        return thread

    # ------------------------------------------------------------------ ticking
    @property
    def has_started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self.stop()
        stop = threading.Event()
        thread = threading.Thread(target=self._loop, args=(stop,), name="cron", daemon=True)
        with self._lock:
            self._stop, self._thread = stop, thread
        thread.start()

    def stop(self) -> None:
        with self._lock:
            stop, thread = self._stop, self._thread
            self._stop = self._thread = None
        if stop is not None:
            stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _loop(self, stop: threading.Event) -> None:
        interval = self.interval
        target = (math.floor(self._clock() / interval) + 1) * interval
        while not stop.is_set():
            now = self._clock()
            if target - now > interval:  # the clock went back: aim at its next tick
                target = (math.floor(now / interval) + 1) * interval
            if now < target:
                if stop.wait(target - now):
                    return
                continue
            if now - target >= interval:  # ticks were missed: keep only the latest
                target = math.floor(now / interval) * interval
            try:
                self.run_due(datetime.fromtimestamp(target, self.timezone))
            except Exception:
                log.exception("the cron tick failed")
            target += interval
