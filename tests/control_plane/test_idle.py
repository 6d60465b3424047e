"""The idle rule of the sweep: the instance's own limit or the fleet's, 0 = never, activity
from the proxy or the database, and never while a request or an event stream is open."""

from __future__ import annotations

from datetime import UTC, datetime

from control_plane.db.models import Instance
from control_plane.hibernation import idle_for_s, idle_limit_s, is_idle
from control_plane.settings import Settings
from proxy.activity import HostActivity

NOW = 1_800_000_000.0


def instance(idle_timeout_s: int | None = None, last_request: float | None = None) -> Instance:
    started = datetime.fromtimestamp(NOW - 3600, tz=UTC)
    last = None if last_request is None else datetime.fromtimestamp(last_request, tz=UTC)
    return Instance(
        owner_id="o", engine="pocketbase", version="0.40.6", idle_timeout_s=idle_timeout_s,
        started_at=started, last_request_at=last,
    )  # fmt: skip


def test_the_limit_is_the_instances_own_else_the_fleets() -> None:
    settings = Settings(idle_timeout_s=600)
    assert idle_limit_s(settings, instance()) == 600
    assert idle_limit_s(settings, instance(idle_timeout_s=60)) == 60
    assert idle_limit_s(settings, instance(idle_timeout_s=0)) == 0


def test_idle_counts_from_the_latest_of_start_database_and_proxy() -> None:
    row = instance(last_request=NOW - 100)
    assert idle_for_s(row, None, NOW) == 100
    assert idle_for_s(row, HostActivity(last_request_at=NOW - 5), NOW) == 5
    assert idle_for_s(instance(), None, NOW) == 3600  # never requested: since its start


def test_an_open_stream_or_a_request_in_flight_is_never_idle() -> None:
    row = instance(last_request=NOW - 10_000)
    assert idle_for_s(row, HostActivity(open_streams=1, in_flight=1), NOW) is None
    assert idle_for_s(row, HostActivity(in_flight=1), NOW) is None
    assert not is_idle(Settings(idle_timeout_s=60), row, HostActivity(open_streams=1), NOW)


def test_is_idle_past_the_limit_and_never_with_limit_zero() -> None:
    row = instance(last_request=NOW - 120)
    assert is_idle(Settings(idle_timeout_s=60), row, None, NOW)
    assert not is_idle(Settings(idle_timeout_s=600), row, None, NOW)
    assert not is_idle(Settings(idle_timeout_s=0), row, None, NOW)
    assert not is_idle(Settings(idle_timeout_s=60), instance(0, NOW - 99_999), None, NOW)
