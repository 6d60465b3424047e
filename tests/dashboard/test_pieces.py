"""The dashboard's pure pieces: where a login may send the browser back to, durations and
sizes for people, and the charts' summaries (no server or browser needed)."""

from __future__ import annotations

from datetime import timedelta

from control_plane.db.models import InstanceSample, utcnow
from dashboard.charts import memory_chart, requests_chart
from dashboard.web import duration, human_bytes, safe_next


def test_only_local_paths_are_returned_to() -> None:
    assert safe_next("/instances/shop") == "/instances/shop"
    for outside in ("//evil.example", "/\t/evil.example", "/\\evil.example", "https://x", "", None):
        assert safe_next(outside) == "/instances"


def test_figures_for_people() -> None:
    assert [duration(s) for s in (5, 75, 7300, 90000)] == ["5 s", "1 min", "2 h 1 min", "1 d 1 h"]
    assert [human_bytes(b) for b in (None, 512, 2048, 36 * 2**20)] == [
        "–",
        "512 B",
        "2 KB",
        "36.0 MB",
    ]


def test_charts_say_what_they_show() -> None:
    now = utcnow()
    points = [
        InstanceSample(instance_id="x", at=now - timedelta(minutes=m), requests=r, memory_bytes=b)
        for m, r, b in ((30, 4, 30 * 2**20), (20, 0, None), (10, 7, 40 * 2**20))
    ]
    requests = str(requests_chart(points, 1))
    assert "11 requests in the last 1 h, at most 7 in one interval" in requests
    assert requests.count('class="bar"') == 3
    memory = str(memory_chart(points, 1))
    assert "at most 40.0 MB, now 40.0 MB" in memory
    assert memory.count('class="dot"') == 2  # the gap (not running) breaks the line
    running = [p for p in points if p.memory_bytes is not None]
    assert 'class="line"' in str(memory_chart(running, 1))
    asleep = str(memory_chart(running, 1, gap=timedelta(minutes=5)))  # no points while asleep
    assert asleep.count('class="dot"') == 2 and 'class="line"' not in asleep
    assert "No requests recorded" in str(requests_chart([], 6))
