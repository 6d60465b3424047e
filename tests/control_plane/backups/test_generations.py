"""Replica generations: the key layout, each generation's window, the generation that holds a
moment, and which generations left the point-in-time window (pure functions, no store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from control_plane.backups import generations
from control_plane.backups.generations import Window
from control_plane.backups.store import ObjectInfo

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ID = "abc123"
MS = timedelta(milliseconds=1)  # Litestream restores from files written strictly before


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def obj(key: str, minutes: float) -> ObjectInfo:
    return ObjectInfo(key, 100, at(minutes))


def test_generation_zero_keeps_the_layout_from_before_generations() -> None:
    assert generations.replica_path(ID, "data.db") == "replicas/abc123/data.db"
    assert generations.replica_path(ID, "data.db", 0) == "replicas/abc123/data.db"
    assert generations.replica_path(ID, "data.db", 3) == "replicas/abc123/g3/data.db"
    assert generations.generation_prefix(ID, 2) == "replicas/abc123/g2/"


LISTING = [
    # generation 0: snapshot at 0 (S3 writes levels as 0009), transactions until 10
    obj("replicas/abc123/data.db/ltx/0009/0000000000000001-0000000000000005.ltx", 0),
    obj("replicas/abc123/data.db/ltx/0000/0000000000000006-0000000000000006.ltx", 4),
    obj("replicas/abc123/data.db/ltx/0001/0000000000000006-0000000000000009.ltx", 10),
    obj("replicas/abc123/auxiliary.db/ltx/0000/0000000000000001-0000000000000001.ltx", 30),
    # generation 2 (1 was deleted): first transaction file at 20, last at 25
    obj("replicas/abc123/g2/data.db/ltx/0/0000000000000001-0000000000000001.ltx", 20),
    obj("replicas/abc123/g2/data.db/ltx/0/0000000000000002-0000000000000002.ltx", 25),
    obj("replicas/abc123/g2/data.db/ltx/0/garbage.tmp", 26),  # not an LTX file
    obj("replicas/other/data.db/ltx/0/0000000000000001-0000000000000001.ltx", 1),
]


def test_each_generation_has_its_own_window() -> None:
    found = generations.windows(ID, ["data.db"], LISTING)
    assert found == [
        Window(0, at(0) + MS, at(10) + MS),
        Window(2, at(20) + MS, at(25) + MS),
    ]
    only = generations.windows(ID, ["auxiliary.db"], LISTING)
    assert only == [Window(0, at(30) + MS, at(30) + MS)]
    assert generations.windows(ID, ["missing.db"], LISTING) == []


def test_a_window_opens_once_every_database_can_be_rebuilt() -> None:
    # generation 0: data.db from 0, auxiliary.db only from 30; generation 2 lacks auxiliary.db
    both = generations.windows(ID, ["data.db", "auxiliary.db"], LISTING)
    assert both == [Window(0, at(30) + MS, at(30) + MS)]


def test_a_window_starts_after_the_files_it_needs() -> None:
    # Litestream rebuilds a moment from files written strictly before it (its own timestamps,
    # in milliseconds): a moment at auxiliary.db's first file is not restorable yet
    first = at(30) + timedelta(milliseconds=250)
    listing = [
        obj("replicas/abc123/data.db/ltx/0009/0000000000000001-0000000000000001.ltx", 0),
        ObjectInfo("replicas/abc123/auxiliary.db/ltx/9/0000000000000001-0000000000000001.ltx",
                   100, first),
    ]  # fmt: skip
    (window,) = generations.windows(ID, ["data.db", "auxiliary.db"], listing)
    assert window.start > first and window.start == window.end == first + MS


def test_the_files_a_window_starts_at_are_those_that_begin_a_replica() -> None:
    # their times must be Litestream's (S3 lists whole seconds): `Replicas` asks the store
    starting = generations.starting_files(ID, ["data.db", "auxiliary.db"], LISTING)
    assert [item.key for item in starting] == [
        "replicas/abc123/data.db/ltx/0009/0000000000000001-0000000000000005.ltx",
        "replicas/abc123/auxiliary.db/ltx/0000/0000000000000001-0000000000000001.ltx",
        "replicas/abc123/g2/data.db/ltx/0/0000000000000001-0000000000000001.ltx",
    ]


def test_a_moment_is_read_from_the_newest_generation_started_by_then() -> None:
    found = generations.windows(ID, ["data.db"], LISTING)
    assert generations.covering(found, at(-1)) is None
    assert generations.covering(found, at(5)) == found[0]
    # after generation 0 ended and before 2 started: generation 0's last state
    assert generations.covering(found, at(15)) == found[0]
    assert generations.covering(found, at(20)) == found[0]  # its second is not over
    assert generations.covering(found, at(20) + MS) == found[1]
    assert generations.covering(found, at(99)) == found[1]


def test_old_generations_are_stale_once_their_newest_object_left_the_window() -> None:
    # generation 0's newest object (any database, any file) is at 30
    assert generations.stale(ID, LISTING, current=2, cutoff=at(30)) == {}
    stale = generations.stale(ID, LISTING, current=2, cutoff=at(31))
    assert set(stale) == {0}
    assert len(stale[0]) == 4 and all(k.startswith("replicas/abc123/") for k in stale[0])
    assert not any("/g2/" in k for k in stale[0])
    # the current generation is never stale, however old
    assert generations.stale(ID, LISTING, current=0, cutoff=at(999)) == {}
    assert set(generations.stale(ID, LISTING, current=3, cutoff=at(999))) == {0, 2}
