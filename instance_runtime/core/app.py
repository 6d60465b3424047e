"""The runtime's application object (PocketBase's `core.App`): data folder, database, schema.

Contract:

- `App(data_dir)` opens (creating if needed) `data_dir/data.db`, bootstraps the system
  collections in a new database and loads the `Schema`. `close()` drains writes and
  checkpoints.
- `app.schema` is the current immutable `Schema` snapshot; `await app.write(fn)` runs
  `fn(conn, schema)` in a write transaction; `write_schema(fn)` does the same for a change of
  collections: `fn` returns `SchemaChange(value, schema)` with the schema reloaded inside the
  transaction, which the app installs once it has committed. `await app.read(fn)` runs
  `fn(conn, schema)` on a reader.
- With `PF_CHECKPOINTS=external` in the environment (the control plane sets it when Litestream
  replicates the instance, and Litestream checkpoints), the runtime never checkpoints its
  database itself (see `core.db`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from instance_runtime.core.db import Database
from instance_runtime.core.schema import Schema, bootstrap

T = TypeVar("T")

CHECKPOINTS_ENV = "PF_CHECKPOINTS"


@dataclass
class SchemaChange(Generic[T]):
    """Returned by a write that changed collections: its value and the schema after it."""

    value: T
    schema: Schema


class App:
    """See the module docstring."""

    def __init__(
        self, data_dir: Path, *, readers: int = 3, external_checkpoints: bool | None = None
    ) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if external_checkpoints is None:
            external_checkpoints = os.environ.get(CHECKPOINTS_ENV) == "external"
        self.db = Database(
            data_dir / "data.db", readers=readers, autocheckpoint=not external_checkpoints
        )
        self.db.write_sync(bootstrap)
        self.schema: Schema = self.db.write_sync(Schema.load)
        # Bumped after every committed write that may change an auth record (token cache key).
        self.auth_generation = 0

    async def read(self, fn: Callable[[sqlite3.Connection, Schema], T]) -> T:
        schema = self.schema
        return await self.db.read(lambda conn: fn(conn, schema))

    async def write(self, fn: Callable[[sqlite3.Connection, Schema], T]) -> T:
        schema = self.schema
        result = await self.db.write(lambda conn: fn(conn, schema))
        self.auth_generation += 1
        return result

    async def write_schema(self, fn: Callable[[sqlite3.Connection, Schema], SchemaChange[T]]) -> T:
        """`write` for a change of collections: installs the new schema after the commit."""
        schema = self.schema
        change = await self.db.write(lambda conn: fn(conn, schema))
        self.auth_generation += 1
        self.schema = change.schema
        return change.value

    def write_sync(self, fn: Callable[[sqlite3.Connection, Schema], T]) -> T:
        schema = self.schema
        result = self.db.write_sync(lambda conn: fn(conn, schema))
        self.auth_generation += 1
        return result

    def close(self) -> None:
        self.db.close()
