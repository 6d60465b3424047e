"""Columns whose values are sealed at rest: `SealedJSON`, and the start-up step that seals
values still stored in clear.

A `SealedJSON` column holds a JSON value (a tenant's env, a pending superuser) that the
database only ever sees sealed: on the way in the value is serialised and sealed by the keyring
bound to the engine (`bind_keyring`), stored as the JSON string `"fernet:KEYID:TOKEN"`; on the
way out it is opened again, so code reading `instance.env` gets the plain mapping and never
knows. None and an empty mapping carry no secret and are stored as they are.

Rows written before sealing existed hold their value in clear (a JSON object). Reading such a
row still works (a JSON object is returned as it is), and `seal_in_place`, run by the control
plane at every start before anything else touches the database, seals every such value and
re-seals every value sealed with a key other than the primary (after a key rotation). When it
rewrote anything it then rebuilds what held the old text, so that the plaintext leaves the
database's files too: the whole file on SQLite (`VACUUM`, then a checkpoint that empties the
WAL), the rewritten tables on PostgreSQL (`VACUUM FULL`; its write-ahead log keeps the old text
until PostgreSQL recycles it). This needs no schema change: the column stays JSON.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from control_plane.sealing import Keyring, KeyringError

_keyrings: weakref.WeakKeyDictionary[Dialect, Keyring] = weakref.WeakKeyDictionary()
_followed: weakref.WeakKeyDictionary[Dialect, Dialect] = weakref.WeakKeyDictionary()


def bind_keyring(engine: AsyncEngine, keyring: Keyring) -> None:
    """Seal and open the sealed columns of `engine`'s database with `keyring`."""
    _keyrings[engine.sync_engine.dialect] = keyring


def follow_keyring(engine: AsyncEngine, source: AsyncEngine) -> None:
    """Make `engine` (another pool on the same database, e.g. its readers) use whatever
    keyring is bound to `source`, now or later."""
    _followed[engine.sync_engine.dialect] = source.sync_engine.dialect


def keyring_of(dialect: Dialect) -> Keyring:
    keyring = _keyrings.get(_followed.get(dialect, dialect))
    if keyring is None:
        raise KeyringError("no key is loaded for this control database (see bind_keyring)")
    return keyring


class SealedJSON(sa.TypeDecorator[Any]):
    """A JSON value sealed by the engine's keyring (see the module's docstring)."""

    impl = sa.JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or value == {}:
            return value
        return keyring_of(dialect).seal(json.dumps(value, separators=(",", ":")))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str):
            return json.loads(keyring_of(dialect).open(value))
        return value  # None, or a value written in clear before sealing existed


def sealed_columns() -> list[sa.Column[Any]]:
    """Every `SealedJSON` column of the models' tables."""
    return [
        column
        for table in SQLModel.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, SealedJSON)
    ]


def _stale(raw: Any, keyring: Keyring) -> bool:
    """Whether a stored value must be (re)written: in clear, or sealed with an old key."""
    if isinstance(raw, str):
        return not keyring.is_current(raw)
    return raw is not None and raw != {}


async def seal_in_place(engine: AsyncEngine) -> int:
    """Seal every value of a sealed column stored in clear, re-seal every value sealed with an
    old key, and return how many were rewritten (on SQLite, the file is then rebuilt)."""
    keyring = keyring_of(engine.sync_engine.dialect)
    sqlite = engine.dialect.name == "sqlite"
    rewritten = 0
    tables: set[str] = set()
    async with engine.begin() as conn:
        if sqlite:  # freed space is zeroed, not left holding the old text
            await conn.exec_driver_sql("PRAGMA secure_delete = ON")
        for column in sealed_columns():
            table = column.table
            keys = list(table.primary_key.columns)
            raw = sa.type_coerce(column, sa.JSON).label("raw")
            for row in (await conn.execute(sa.select(raw, *keys))).all():
                if not _stale(row.raw, keyring):
                    continue
                value = json.loads(keyring.open(row.raw)) if isinstance(row.raw, str) else row.raw
                match = sa.and_(*(key == row[number + 1] for number, key in enumerate(keys)))
                await conn.execute(sa.update(table).where(match).values({column.name: value}))
                rewritten += 1
                tables.add(table.name)
    if rewritten:
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if sqlite:
                await auto.exec_driver_sql("VACUUM")
                await auto.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            elif engine.dialect.name == "postgresql":
                for name in sorted(tables):
                    await auto.exec_driver_sql(f'VACUUM FULL "{name}"')
    return rewritten
