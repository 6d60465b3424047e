"""The app's record and collection services as hooks use them (PocketBase's `$app.findRecordById`,
`findRecordsByFilter`, `save`, `delete`, `findCollectionByNameOrId`, ...).

Contract:

- `Tx(conn, schema, hooks)` works inside one write transaction (a model hook's `e.conn`, or the
  transaction of `HooksApp.transaction`): everything it does commits or rolls back with it.
  Its methods are plain (blocking) calls:
  `find(collection, id)` (None when missing), `find_first(collection, filter, params=None,
  sort="")`, `list(collection, filter="", sort="", limit=None, offset=0, params=None)`,
  `count(collection, filter="", params=None)`, `create(collection, data)`,
  `update(collection, id, data)`, `delete(collection, id)`.
  Filters and sorts are PocketBase's filter language with `{:name}` placeholders filled from
  `params` (quoted as literals, never spliced as code); as PocketBase's `FindRecordsByFilter`
  they are the app's own queries: no API rule applies, hidden fields may be used. Writes go
  through exactly what the records API runs for a superuser — the same validation (400 with
  the fields' errors), password hashing, `field+`/`field-` modifiers, relation cascades, the
  model hooks and, after the commit, the success events (realtime included); the rules are
  not checked.
  Records are dicts of every field (hidden ones too), as the model hooks see them.
  An unknown collection is a `NotFoundError` ("Missing collection context.").
- `Records(runtime)` is the same with `async` methods, each in its own read or write
  transaction (await them in request hooks, routes and async cron jobs).
- `Collections(runtime)`: `find(name_or_id)`, `all()` from the current schema; `await
  create(data)`, `update(name_or_id, data)`, `delete(name_or_id)` take PocketBase's collection
  JSON and validate as `/api/collections` does.
- `export(collection, record, info=None)` is a record's API JSON as `info` (a guest when None)
  would get it: hidden fields dropped, the email per `emailVisibility`.
- `tx.execute(sql, params=())` runs raw SQL on the transaction's connection (PocketBase's
  `app.db().newQuery(sql).execute()`); parameters are bound, never spliced.
- `MigrationApp(conn, schema, hooks)` is the `app` of a migration's `up(app)` / `down(app)`
  (`core.migrations`): a `Tx` whose `collections` (`TxCollections`) also change collections
  inside the same transaction: `find`, `get`, `all`, `draft`, `save` (PocketBase's collection
  JSON, a `Collection` or a `CollectionDraft`: an update when a collection has its id, or,
  without id, its name; else a create), `delete`, `import_collections(items, delete_missing)`;
  each validates as `/api/collections` does. Its `schema` follows every change made through it
  (and is reloaded after raw SQL), so records of a collection created a line before can be
  written. `CollectionDraft` edits a collection's JSON as PocketBase's migrations do
  (`unmarshal(data, collection)`, `fields.addAt`, `removeById`, `removeByName`, `addIndex`,
  `removeIndex`).
"""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from instance_runtime.core import collections as collection_service
from instance_runtime.core import record_write, records
from instance_runtime.core.app import App, SchemaChange
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.field_resolver import build_records_query
from instance_runtime.core.models import Collection
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import SUPERUSERS, RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.hooks.errors import NotFoundError
from instance_runtime.tools.dbutils import parse_index
from instance_runtime.tools.search import replace_placeholders

Params = Mapping[str, Any]
_MISSING = "Missing collection context."


def _system_info(schema: Schema, method: str) -> RequestInfo:
    """The request info the app's own writes run with: a superuser, without a record."""
    return RequestInfo(method=method, auth={}, auth_collection=schema.find(SUPERUSERS))


class Tx:
    """See the module docstring."""

    def __init__(self, conn: sqlite3.Connection, schema: Schema, hooks: AppHooks) -> None:
        self.conn = conn
        self.schema = schema
        self._hooks = hooks

    def collection(self, name_or_id: str) -> Collection:
        found = self.schema.find(name_or_id)
        if found is None:
            raise NotFoundError(_MISSING)
        return found

    # ------------------------------------------------------------------ reads
    def find(self, collection: str, record_id: str) -> Record | None:
        return records.find(self.conn, self.collection(collection), record_id)

    def list(
        self,
        collection: str,
        filter: str = "",
        sort: str = "",
        limit: int | None = None,
        offset: int = 0,
        params: Params | None = None,
    ) -> list[Record]:
        coll = self.collection(collection)
        query = self._query(coll, filter, sort, params)
        page = query.build(records.select_columns(coll, coll.name), limit=limit, offset=offset)
        names = [f.name for f in coll.fields]
        return [records.row_to_record(coll, names, row) for row in self.conn.execute(
            page.sql, page.params
        )]  # fmt: skip

    def find_first(
        self, collection: str, filter: str, params: Params | None = None, sort: str = ""
    ) -> Record | None:
        found = self.list(collection, filter, sort, limit=1, params=params)
        return found[0] if found else None

    def count(self, collection: str, filter: str = "", params: Params | None = None) -> int:
        coll = self.collection(collection)
        count = self._query(coll, filter, "", params).build_count(
            "id" if coll.is_view else "_rowid_"
        )
        return int(self.conn.execute(count.sql, count.params).fetchone()[0])

    def _query(self, coll: Collection, filter: str, sort: str, params: Params | None) -> Any:
        text = replace_placeholders(filter, params) if params and filter else filter
        return build_records_query(
            coll, self.schema, None, filter=text, sort=sort, superuser=True, filter_max_length=None
        )

    # ------------------------------------------------------------------ writes
    def create(self, collection: str, data: Mapping[str, Any]) -> Record:
        coll = self.collection(collection)
        info = _system_info(self.schema, "POST")
        return record_write.create(
            self.conn, self.schema, coll, dict(data), info, hooks=self._hooks
        )

    def update(self, collection: str, record_id: str, data: Mapping[str, Any]) -> Record:
        coll = self.collection(collection)
        info = _system_info(self.schema, "PATCH")
        return record_write.update(
            self.conn, self.schema, coll, record_id, dict(data), info, hooks=self._hooks
        )

    def delete(self, collection: str, record_id: str) -> None:
        coll = self.collection(collection)
        info = _system_info(self.schema, "DELETE")
        record_write.delete(self.conn, self.schema, coll, record_id, info, hooks=self._hooks)

    # ------------------------------------------------------------------ raw SQL
    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        """Run one SQL statement in this transaction (fetch from the cursor it returns)."""
        return self.conn.execute(sql, params)


class Records:
    """See the module docstring: `Tx`'s methods, awaited, each in its own transaction."""

    def __init__(self, runtime: App) -> None:
        self._runtime = runtime

    def _tx(self, conn: sqlite3.Connection, schema: Schema) -> Tx:
        return Tx(conn, schema, self._runtime.hooks)

    async def find(self, collection: str, record_id: str) -> Record | None:
        return await self._runtime.read(lambda c, s: self._tx(c, s).find(collection, record_id))

    async def list(
        self,
        collection: str,
        filter: str = "",
        sort: str = "",
        limit: int | None = None,
        offset: int = 0,
        params: Params | None = None,
    ) -> list[Record]:
        return await self._runtime.read(
            lambda c, s: self._tx(c, s).list(collection, filter, sort, limit, offset, params)
        )

    async def find_first(
        self, collection: str, filter: str, params: Params | None = None, sort: str = ""
    ) -> Record | None:
        return await self._runtime.read(
            lambda c, s: self._tx(c, s).find_first(collection, filter, params, sort)
        )

    async def count(self, collection: str, filter: str = "", params: Params | None = None) -> int:
        return await self._runtime.read(
            lambda c, s: self._tx(c, s).count(collection, filter, params)
        )

    async def create(self, collection: str, data: Mapping[str, Any]) -> Record:
        return await self._runtime.write(lambda c, s: self._tx(c, s).create(collection, data))

    async def update(self, collection: str, record_id: str, data: Mapping[str, Any]) -> Record:
        return await self._runtime.write(
            lambda c, s: self._tx(c, s).update(collection, record_id, data)
        )

    async def delete(self, collection: str, record_id: str) -> None:
        await self._runtime.write(lambda c, s: self._tx(c, s).delete(collection, record_id))


class Collections:
    """See the module docstring."""

    def __init__(self, runtime: App) -> None:
        self._runtime = runtime

    def find(self, name_or_id: str) -> Collection | None:
        return self._runtime.schema.find(name_or_id)

    def all(self) -> list[Collection]:
        return self._runtime.schema.all()

    def _get(self, schema: Schema, name_or_id: str) -> Collection:
        found = schema.find(name_or_id)
        if found is None:
            raise NotFoundError()
        return found

    async def create(self, data: Mapping[str, Any]) -> Collection:
        hooks = self._runtime.hooks

        def run(conn: sqlite3.Connection, schema: Schema) -> SchemaChange[Collection]:
            coll = collection_service.create(conn, schema, dict(data), hooks=hooks)
            return SchemaChange(coll, Schema.load(conn))

        return await self._runtime.write_schema(run)

    async def update(self, name_or_id: str, data: Mapping[str, Any]) -> Collection:
        hooks = self._runtime.hooks

        def run(conn: sqlite3.Connection, schema: Schema) -> SchemaChange[Collection]:
            old = self._get(schema, name_or_id)
            coll = collection_service.update(conn, schema, old, dict(data), hooks=hooks)
            return SchemaChange(coll, Schema.load(conn))

        return await self._runtime.write_schema(run)

    async def delete(self, name_or_id: str) -> None:
        hooks = self._runtime.hooks

        def run(conn: sqlite3.Connection, schema: Schema) -> SchemaChange[None]:
            collection_service.delete(conn, schema, self._get(schema, name_or_id), hooks=hooks)
            return SchemaChange(None, Schema.load(conn))

        await self._runtime.write_schema(run)


CollectionData = Mapping[str, Any]


class CollectionDraft:
    """A collection's JSON being changed, saved with `app.collections.save(draft)`."""

    def __init__(self, data: CollectionData) -> None:
        self.data: dict[str, Any] = copy.deepcopy(dict(data))
        self.data.setdefault("fields", [])

    @property
    def id(self) -> str:
        return str(self.data.get("id") or "")

    @property
    def fields(self) -> list[dict[str, Any]]:
        fields: list[dict[str, Any]] = self.data["fields"]
        return fields

    def update(self, values: CollectionData) -> None:
        """Merge `values` in (PocketBase's `unmarshal(values, collection)`): objects member by
        member, anything else (lists, strings, None) replaces."""
        _merge_into(self.data, values)

    def add_field_at(self, index: int, field: CollectionData) -> None:
        """Insert `field` at `index` (PocketBase's `fields.addAt`): a field with the same id
        (or, without id, the same name, whose id it takes) moves there, replaced."""
        new = copy.deepcopy(dict(field))
        fields = self.fields
        for i, old in enumerate(fields):
            same = (
                old.get("id") == new["id"] if new.get("id") else old.get("name") == new.get("name")
            )
            if same:
                new["id"] = old.get("id", "")
                del fields[i]
                break
        fields.insert(max(0, min(index, len(fields))), new)

    def remove_field_by_id(self, field_id: str) -> None:
        """Drop the field with id `field_id` (PocketBase's `fields.removeById`)."""
        self.data["fields"] = [f for f in self.fields if f.get("id") != field_id]

    def remove_field_by_name(self, name: str) -> None:
        """Drop the field called `name` (PocketBase's `fields.removeByName`)."""
        self.data["fields"] = [f for f in self.fields if f.get("name") != name]

    def add_index(self, name: str, unique: bool, columns: str, where: str = "") -> None:
        """Add (or replace) the index `name` on `columns` (PocketBase's `addIndex`)."""
        self.remove_index(name)
        sql = f"CREATE {'UNIQUE ' if unique else ''}INDEX `{name}` ON `{self.data.get('name')}` "
        sql += f"({columns})" + (f" WHERE {where}" if where else "")
        self.data["indexes"] = [*self.data.get("indexes", []), sql]

    def remove_index(self, name: str) -> None:
        """Drop the index `name` (case-insensitively, as PocketBase's `removeIndex`)."""
        kept = [
            i
            for i in self.data.get("indexes", [])
            if parse_index(i).index_name.lower() != name.lower()
        ]
        self.data["indexes"] = kept


def _merge_into(target: dict[str, Any], values: CollectionData) -> None:
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class MigrationApp(Tx):
    """See the module docstring: the `app` of `up(app)` / `down(app)` in `pb_migrations/*.py`."""

    def __init__(self, conn: sqlite3.Connection, schema: Schema, hooks: AppHooks) -> None:
        self._schema = schema
        self._stale = False
        super().__init__(conn, schema, hooks)

    @property  # a Tx attribute, kept current here
    def schema(self) -> Schema:
        if self._stale:
            self._schema, self._stale = Schema.load(self.conn), False
        return self._schema

    @schema.setter
    def schema(self, value: Schema) -> None:
        self._schema, self._stale = value, False

    @property
    def collections(self) -> TxCollections:
        return TxCollections(self)

    @property
    def hooks(self) -> AppHooks:
        return self._hooks

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        self._stale = True  # the statement may have changed `_collections`
        return super().execute(sql, params)

    def schema_changed(self) -> None:
        """Reload the schema (after a collection change made through this transaction)."""
        self.schema = Schema.load(self.conn)


class TxCollections:
    """See the module docstring: collections inside a `MigrationApp`'s transaction."""

    def __init__(self, app: MigrationApp) -> None:
        self._app = app

    def find(self, name_or_id: str) -> Collection | None:
        return self._app.schema.find(name_or_id)

    def get(self, name_or_id: str) -> Collection:
        """The collection, or `NotFoundError`."""
        found = self.find(name_or_id)
        if found is None:
            raise NotFoundError(f"Collection {name_or_id!r} not found.")
        return found

    def all(self) -> list[Collection]:
        return self._app.schema.all()

    def draft(self, name_or_id: str) -> CollectionDraft:
        """The collection's JSON to change and `save` (`NotFoundError` when missing)."""
        return CollectionDraft(self.get(name_or_id).to_json())

    def save(self, collection: CollectionDraft | Collection | CollectionData) -> Collection:
        """Create or update (see the module docstring); the collection as saved."""
        data = _data_of(collection)
        app, schema = self._app, self._app.schema
        key = str(data.get("id") or "") or str(data.get("name") or "")
        old = schema.find(key) if key else None
        if old is None:
            saved = collection_service.create(app.conn, schema, data, hooks=app.hooks)
        else:
            saved = collection_service.update(app.conn, schema, old, data, hooks=app.hooks)
        app.schema_changed()
        return saved

    def delete(self, collection: str | Collection | CollectionDraft) -> None:
        """Delete a collection (by name or id) and its table; `NotFoundError` when missing."""
        key = collection if isinstance(collection, str) else collection.id
        app = self._app
        collection_service.delete(app.conn, app.schema, self.get(key), hooks=app.hooks)
        app.schema_changed()

    def import_collections(
        self, items: Sequence[CollectionData], delete_missing: bool = False
    ) -> None:
        """PocketBase's `importCollections`: create or update each (matched by id, then name);
        with `delete_missing`, delete every other non-system collection."""
        app = self._app
        listed = [_data_of(item) for item in items]
        collection_service.import_collections(
            app.conn, app.schema, listed, delete_missing, hooks=app.hooks
        )
        app.schema_changed()


def _data_of(collection: CollectionDraft | Collection | CollectionData) -> dict[str, Any]:
    if isinstance(collection, CollectionDraft):
        return copy.deepcopy(collection.data)
    if isinstance(collection, Collection):
        return collection.to_json()
    return copy.deepcopy(dict(collection))


def export(
    collection: Collection, record: Record, info: RequestInfo | None = None
) -> dict[str, Any]:
    """See the module docstring."""
    return records.serialize(collection, record, info or RequestInfo())
