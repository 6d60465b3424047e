"""Server-rendered SVG charts of an instance's chart points (no JavaScript, no library).

Each chart is an accessible image (`role="img"` with a title and a one-line summary), scales
to its container through its viewBox, and is styled by the stylesheet (classes, no inline
styles). Times are UTC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from control_plane.db.models import InstanceSample, utcnow
from dashboard.web import human_bytes

WIDTH, HEIGHT = 600, 170
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 10, 24
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^n at or above `value` (a y axis with a round top)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def _frame(
    title: str, summary: str, top_label: str, start: datetime, end: datetime, body: str
) -> Markup:
    ticks = []
    for fraction in (0.0, 0.5, 1.0):
        x = LEFT + PLOT_W * fraction
        when = start + (end - start) * fraction
        anchor = "start" if fraction == 0 else "end" if fraction == 1 else "middle"
        ticks.append(
            f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">'
            f"{when:%H:%M}</text>"
        )
    slug = "".join(c for c in title.lower() if c.isalnum())
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-{slug}-t chart-{slug}-d" preserveAspectRatio="none">'
        f'<title id="chart-{slug}-t">{escape(title)}</title>'
        f'<desc id="chart-{slug}-d">{escape(summary)}</desc>'
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}"/>'
        f'<line class="grid" x1="{LEFT}" y1="{TOP + PLOT_H / 2}" x2="{WIDTH - RIGHT}" '
        f'y2="{TOP + PLOT_H / 2}"/>'
        f'<line class="baseline" x1="{LEFT}" y1="{TOP + PLOT_H}" x2="{WIDTH - RIGHT}" '
        f'y2="{TOP + PLOT_H}"/>'
        f'<text class="axis" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">'
        f"{escape(top_label)}</text>"
        f'<text class="axis" x="{LEFT - 6}" y="{TOP + PLOT_H}" text-anchor="end">0</text>'
        f"{body}{''.join(ticks)}</svg>"
    )


def _x(at: datetime, start: datetime, span: float) -> float:
    return LEFT + PLOT_W * max(0.0, min(1.0, (at - start).total_seconds() / span))


def requests_chart(points: Sequence[InstanceSample], hours: int) -> Markup:
    """Requests per sampling interval, as bars."""
    end = utcnow()
    start = end - timedelta(hours=hours)
    span = (end - start).total_seconds()
    total = sum(p.requests for p in points)
    peak = max((p.requests for p in points), default=0)
    top = _nice_max(peak)
    bar_w = max(1.5, PLOT_W / max(len(points), 1) * 0.7) if points else 0
    bars = []
    for point in points:
        height = PLOT_H * point.requests / top
        x = _x(point.at, start, span) - bar_w
        bars.append(
            f'<rect class="bar" x="{max(LEFT, x):.1f}" y="{TOP + PLOT_H - height:.1f}" '
            f'width="{bar_w:.1f}" height="{height:.1f}"><title>{point.at:%H:%M} UTC: '
            f"{point.requests} requests</title></rect>"
        )
    summary = (
        f"{total} requests in the last {hours} h, at most {peak} in one interval"
        if points
        else f"No requests recorded in the last {hours} h yet"
    )
    return _frame("Requests", summary, f"{top:g}", start, end, "".join(bars))


def memory_chart(
    points: Sequence[InstanceSample], hours: int, gap: timedelta | None = None
) -> Markup:
    """Memory in use at each sample, as a line, broken where the instance did not run: at a
    point without memory, and between points further apart than `gap` (no points are kept
    while an instance sleeps)."""
    end = utcnow()
    start = end - timedelta(hours=hours)
    span = (end - start).total_seconds()
    values = [p.memory_bytes for p in points if p.memory_bytes is not None]
    peak = max(values, default=0)
    top = _nice_max(peak / 2**20) * 2**20
    to_y: Callable[[int], float] = lambda v: TOP + PLOT_H - PLOT_H * v / top  # noqa: E731
    runs: list[list[str]] = [[]]
    previous: datetime | None = None
    for point in points:
        if point.memory_bytes is None:
            runs.append([])
            continue
        if gap is not None and previous is not None and point.at - previous > gap:
            runs.append([])
        previous = point.at
        runs[-1].append(f"{_x(point.at, start, span):.1f},{to_y(point.memory_bytes):.1f}")
    body = "".join(
        f'<polyline class="line" points="{" ".join(run)}"/>'
        if len(run) > 1
        else f'<circle class="dot" cx="{run[0].split(",")[0]}" cy="{run[0].split(",")[1]}" r="2"/>'
        for run in runs
        if run
    )
    summary = (
        f"Memory in the last {hours} h: at most {human_bytes(peak)}, now {human_bytes(values[-1])}"
        if values
        else f"No memory figures in the last {hours} h yet"
    )
    return _frame("Memory", summary, human_bytes(int(top)), start, end, body)
