"""Replica generations: every restore starts a new, separate line of replicas.

Litestream replicates each database as one growing history of transactions. When an
instance's databases are replaced (a restore), or its replica turns out not to rebuild a sound
database (a failed drill, see `drills`), that history is closed and a new one starts with a
full snapshot of the databases as they are now, under a new key prefix:

    replicas/INSTANCE_ID/DB_NAME/ltx/...         generation 0 (every instance starts there)
    replicas/INSTANCE_ID/gN/DB_NAME/ltx/...      generation N >= 1

The current generation of an instance is `BackupState.replica_generation`. Earlier ones stay
readable, so a point-in-time restore to a moment before the last restore reads the generation
that was current then (`covering`), and they are deleted once their newest object is older
than the point-in-time window (`stale`). Nothing here talks to a store: callers list objects
and pass them in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from control_plane.backups.store import ObjectInfo

_GENERATION = re.compile(r"g([1-9][0-9]*)")


def instance_prefix(instance_id: str) -> str:
    return f"replicas/{instance_id}/"


def generation_prefix(instance_id: str, generation: int) -> str:
    """The key prefix of one generation (generation 0 shares its prefix with no other: its
    database folders are named after databases, never `gN`)."""
    if generation == 0:
        return instance_prefix(instance_id)
    return f"{instance_prefix(instance_id)}g{generation}/"


def replica_path(instance_id: str, db_name: str, generation: int = 0) -> str:
    """Where Litestream replicates database `db_name` of an instance, in one generation."""
    return f"{generation_prefix(instance_id, generation)}{db_name}"


@dataclass(frozen=True)
class Window:
    """What one generation holds: its databases are restorable from `start` to `end`."""

    generation: int
    start: datetime
    end: datetime


def _split(instance_id: str, key: str) -> tuple[int, list[str]] | None:
    """(generation, the rest of the key's parts) of a key under `instance_prefix`."""
    prefix = instance_prefix(instance_id)
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    match = _GENERATION.fullmatch(parts[0])
    if match is None:
        return 0, parts
    return int(match.group(1)), parts[1:]


def _parse(instance_id: str, key: str) -> tuple[int, str, str, str] | None:
    """(generation, database, level, file name) of a replica's LTX file."""
    split = _split(instance_id, key)
    if split is None or not key.endswith(".ltx") or len(split[1]) < 3:
        return None
    generation, parts = split
    return generation, parts[0], parts[-2], parts[-1]


def windows(
    instance_id: str, db_names: Sequence[str], objects: Iterable[ObjectInfo]
) -> list[Window]:
    """The window of each generation among `objects` (the listing of `instance_prefix`) in
    which every database of `db_names` can be rebuilt, oldest generation first.

    A database's replica starts at its earliest file that begins at its first transaction
    (`starting_files`: a snapshot, or a transaction file from transaction 1 at any level). A
    generation's window starts once every database's replica has started, and ends at its
    newest object (a database with no file after that had no write since). A generation
    missing one of the databases has no window.

    Litestream rebuilds a moment from the files created strictly before it, by timestamps of
    its own in milliseconds: each object counts from the millisecond after its time
    (`_after`), so that a moment at a database's first file is not in the window. The times
    of `starting_files` must be Litestream's own (`BackupStore.replica_times`; an S3 listing
    gives whole seconds, up to a second before Litestream's): a window then starts where
    Litestream's restores do, and every moment of it can be rebuilt (its end too, which is
    never before its start)."""
    found: dict[int, dict[str, tuple[list[datetime], list[datetime]]]] = {}
    for item in objects:
        parsed = _parse(instance_id, item.key)
        if parsed is None or parsed[1] not in db_names:
            continue
        generation, db_name, level, name = parsed
        starts, all_times = found.setdefault(generation, {}).setdefault(db_name, ([], []))
        moment = _after(item.modified)
        all_times.append(moment)
        if _starts_replica(level, name):
            starts.append(moment)
    result = []
    for generation, by_db in sorted(found.items()):
        if len(by_db) < len(set(db_names)):
            continue
        start = max(min(starts or all_times) for starts, all_times in by_db.values())
        end = max(max(all_times) for _, all_times in by_db.values())
        result.append(Window(generation, start.astimezone(UTC), end.astimezone(UTC)))
    return result


def starting_files(
    instance_id: str, db_names: Sequence[str], objects: Iterable[ObjectInfo]
) -> list[ObjectInfo]:
    """The files among `objects` that a replica of one of `db_names` can be rebuilt from alone
    (the times `windows` starts windows at)."""
    found = []
    for item in objects:
        parsed = _parse(instance_id, item.key)
        if parsed is not None and parsed[1] in db_names and _starts_replica(*parsed[2:]):
            found.append(item)
    return found


def _starts_replica(level: str, name: str) -> bool:
    """Whether the LTX file `name` of `level` begins at the first transaction: a snapshot
    (level 9, written "9" by file replicas and "0009" by S3 ones) or a transaction file from
    transaction 1."""
    return level.lstrip("0") == "9" or name.startswith("0000000000000001-")


def _after(listed: datetime) -> datetime:
    """The first moment a restore includes an object written at `listed`."""
    return listed + timedelta(milliseconds=1)


def covering(found: list[Window], at: datetime) -> Window | None:
    """The generation to rebuild the moment `at` from: the newest one started by then (a
    moment after its end, before the next one started, is its end state)."""
    eligible = [w for w in found if w.start <= at]
    return max(eligible, key=lambda w: w.generation) if eligible else None


def stale(
    instance_id: str, objects: Iterable[ObjectInfo], current: int, cutoff: datetime
) -> dict[int, list[str]]:
    """The keys of each generation before `current` whose newest object is older than
    `cutoff` (it left the point-in-time window), by generation."""
    keys: dict[int, list[str]] = {}
    newest: dict[int, datetime] = {}
    for item in objects:
        split = _split(instance_id, item.key)
        if split is None or split[0] >= current:
            continue
        generation = split[0]
        keys.setdefault(generation, []).append(item.key)
        newest[generation] = max(newest.get(generation, item.modified), item.modified)
    return {g: found for g, found in keys.items() if newest[g] < cutoff}
