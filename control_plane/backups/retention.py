"""Retention of snapshots: keep the last N, plus the newest of each of the last D days, W weeks
and M months that have one (like restic's `forget --keep-*`).

Only good snapshots count and only good snapshots are pruned by this rule; the newest good
snapshot is always kept (N is at least 1).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Policy:
    last: int = 7
    daily: int = 7
    weekly: int = 4
    monthly: int = 6


@dataclass(frozen=True)
class Candidate:
    id: str
    created: datetime


def _day(moment: datetime) -> Hashable:
    return moment.date()


def _week(moment: datetime) -> Hashable:
    year, week, _ = moment.isocalendar()
    return (year, week)


def _month(moment: datetime) -> Hashable:
    return (moment.year, moment.month)


def to_keep(snapshots: Sequence[Candidate], policy: Policy) -> set[str]:
    """Ids of the good `snapshots` that the policy keeps; the others may be pruned."""
    newest_first = sorted(snapshots, key=lambda s: s.created, reverse=True)
    keep = {s.id for s in newest_first[: max(1, policy.last)]}
    buckets: tuple[tuple[int, Callable[[datetime], Hashable]], ...] = (
        (policy.daily, _day),
        (policy.weekly, _week),
        (policy.monthly, _month),
    )
    for count, bucket_of in buckets:
        seen: set[Hashable] = set()
        for snap in newest_first:
            if len(seen) >= count:
                break
            bucket = bucket_of(snap.created)
            if bucket not in seen:
                seen.add(bucket)
                keep.add(snap.id)
    return keep
