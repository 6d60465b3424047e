"""The events only Python hooks have, beside the runtime's own (`core.events`).

Contract:

- `RecordErrorEvent`: a record create, update or delete failed (a validation error, a hook that
  refused, a write error) — PocketBase's `OnRecordAfter{Create,Update,Delete}Error`. It is
  triggered where the failure happened, inside the write transaction that is about to be rolled
  back (so anything written through `conn` is rolled back with it; send mail or log instead).
  `error` is the exception (the one a hook raised, not the 400 it is answered with); the
  failure is raised again after the chain, whatever the handlers do. Tagged with the
  collection's id and name.
- `BootstrapEvent`: the hook files were (re)loaded and the app is ready (database open,
  settings loaded); `next()` ends the chain.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from instance_runtime.core.events import Action, Record
from instance_runtime.core.hooks import Event
from instance_runtime.core.models import Collection

if TYPE_CHECKING:
    from instance_runtime.hooks.app import HooksApp


@dataclass(eq=False)
class RecordErrorEvent(Event):
    conn: sqlite3.Connection
    collection: Collection
    record: Record
    action: Action
    error: Exception

    def tags(self) -> tuple[str, ...]:
        return (self.collection.id, self.collection.name)


@dataclass(eq=False)
class BootstrapEvent(Event):
    app: HooksApp
