"""The collection model, shaped exactly as PocketBase 0.40 shapes it in JSON and in SQLite.

A `Collection` is one row of the `_collections` table and one real table named after it; a
`Field` is one entry of its `fields` JSON list and one column of that table. Both round-trip
through PocketBase's JSON (`from_json(x.to_json()) == x`) and through the `_collections` row
(`Collection.from_row(c.to_row())`).

Contract for readers (the record field resolver, the records API, the migrator):

- `Field.type` is one of `FIELD_TYPES`; every type-specific key (`min`, `max`, `pattern`,
  `values`, `maxSelect`, `collectionId`, `cascadeDelete`, `onCreate`, `onUpdate`, `maxSize`,
  `mimeTypes`, ...) lives in `Field.options`, always complete (missing keys get PocketBase's
  defaults from `FIELD_OPTION_DEFAULTS`).
- `Field.is_multiple` is true for select/relation/file fields with `maxSelect > 1`: their column
  holds a JSON array in TEXT (`JSON DEFAULT '[]'`), otherwise a plain value.
- Storage per field type: see `Field.column_definition()`; bools are 0/1, numbers NUMERIC,
  dates TEXT `YYYY-MM-DD HH:MM:SS.sssZ` (`format_datetime`), `json` and `geoPoint` JSON text.
- `Collection.name` is the table name; the `id` column is `TEXT PRIMARY KEY`.
"""

from __future__ import annotations

import copy
import dataclasses
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

CollectionType = Literal["base", "auth", "view"]
COLLECTION_TYPES: tuple[str, ...] = ("base", "auth", "view")

FIELD_TYPES: tuple[str, ...] = (
    "text",
    "number",
    "bool",
    "email",
    "url",
    "editor",
    "date",
    "autodate",
    "select",
    "json",
    "relation",
    "file",
    "password",
    "geoPoint",
)

# Type-specific keys and their defaults, as PocketBase serializes a freshly created field.
FIELD_OPTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "text": {"autogeneratePattern": "", "max": 0, "min": 0, "pattern": "", "primaryKey": False},
    "number": {"max": None, "min": None, "onlyInt": False},
    "bool": {},
    "email": {"exceptDomains": [], "onlyDomains": []},
    "url": {"exceptDomains": [], "onlyDomains": []},
    "editor": {"convertURLs": False, "maxSize": 0},
    "date": {"max": "", "min": ""},
    "autodate": {"onCreate": False, "onUpdate": False},
    "select": {"maxSelect": 0, "values": []},
    "json": {"maxSize": 0},
    "relation": {"cascadeDelete": False, "collectionId": "", "maxSelect": 0, "minSelect": 0},
    "file": {"maxSelect": 0, "maxSize": 0, "mimeTypes": [], "protected": False, "thumbs": []},
    "password": {"cost": 0, "max": 0, "min": 0, "pattern": ""},
    "geoPoint": {},
}

# Field types that have no `help` / `required` key in PocketBase's JSON.
_NO_HELP = frozenset({"autodate"})
_NO_REQUIRED = frozenset({"autodate"})
_COMMON_KEYS = frozenset({"id", "name", "type", "system", "hidden", "presentable", "required"})

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def format_datetime(value: datetime) -> str:
    """`value` as PocketBase stores and serializes dates: `2024-01-02 03:04:05.678Z` (UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime(DATETIME_FORMAT)[:-3] + "Z"


def now_datetime() -> str:
    """The current time formatted by `format_datetime`."""
    return format_datetime(datetime.now(UTC))


def crc32_checksum(text: str) -> str:
    """PocketBase's `crc32Checksum`: the decimal IEEE CRC-32 of `text`'s UTF-8 bytes."""
    return str(zlib.crc32(text.encode()))


@dataclass
class Field:
    """One field of a collection (one column of its table)."""

    name: str
    type: str
    id: str = ""
    system: bool = False
    hidden: bool = False
    presentable: bool = False
    required: bool = False
    help: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        defaults = FIELD_OPTION_DEFAULTS.get(self.type, {})
        merged = copy.deepcopy(defaults)
        merged.update(self.options)
        self.options = merged
        if not self.id:
            self.id = self.type + crc32_checksum(self.name)

    # ------------------------------------------------------------------ helpers
    def opt(self, key: str, default: Any = None) -> Any:
        """The type-specific option `key` (e.g. `maxSelect`), or `default`."""
        return self.options.get(key, default)

    @property
    def max_select(self) -> int:
        value = self.options.get("maxSelect") or 0
        return int(value)

    @property
    def is_multiple(self) -> bool:
        """True for select/relation/file fields storing a JSON array (`maxSelect > 1`)."""
        return self.type in ("select", "relation", "file") and self.max_select > 1

    @property
    def collection_id(self) -> str:
        """Target collection id of a relation field ("" for other types)."""
        return str(self.options.get("collectionId") or "") if self.type == "relation" else ""

    @property
    def is_primary_key(self) -> bool:
        return self.type == "text" and bool(self.options.get("primaryKey"))

    def column_definition(self) -> str:
        """The SQLite column type and constraints PocketBase uses for this field."""
        if self.is_primary_key or (self.name == "id" and self.system):
            return "TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL"
        if self.is_multiple:
            return "JSON DEFAULT '[]' NOT NULL"
        if self.type == "number":
            return "NUMERIC DEFAULT 0 NOT NULL"
        if self.type == "bool":
            return "BOOLEAN DEFAULT FALSE NOT NULL"
        if self.type == "json":
            return "JSON DEFAULT NULL"
        if self.type == "geoPoint":
            return """JSON DEFAULT '{"lon":0,"lat":0}' NOT NULL"""
        return "TEXT DEFAULT '' NOT NULL"

    def zero_value(self) -> Any:
        """The value of this field in a record that never set it (as the API serializes it)."""
        if self.is_multiple:
            return []
        if self.type == "number":
            return 0
        if self.type == "bool":
            return False
        if self.type == "json":
            return None
        if self.type == "geoPoint":
            return {"lon": 0, "lat": 0}
        return ""

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """PocketBase's JSON for this field (keys sorted as PocketBase emits them)."""
        out: dict[str, Any] = {
            "hidden": self.hidden,
            "id": self.id,
            "name": self.name,
            "presentable": self.presentable,
            "system": self.system,
            "type": self.type,
        }
        if self.type not in _NO_HELP:
            out["help"] = self.help
        if self.type not in _NO_REQUIRED:
            out["required"] = self.required
        for key, value in self.options.items():
            out[key] = copy.deepcopy(value)
        return dict(sorted(out.items()))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Field:
        """A field from PocketBase's JSON; unknown keys of its type are kept in `options`.

        Does not validate (see the collection validator); `type` and `name` default to "".
        """
        ftype = str(data.get("type") or "")
        known = FIELD_OPTION_DEFAULTS.get(ftype)
        options = {
            k: copy.deepcopy(v)
            for k, v in data.items()
            if k not in _COMMON_KEYS and k != "help" and (known is None or k in known)
        }
        return cls(
            name=str(data.get("name") or ""),
            type=ftype,
            id=str(data.get("id") or ""),
            system=bool(data.get("system", False)),
            hidden=bool(data.get("hidden", False)),
            presentable=bool(data.get("presentable", False)),
            required=bool(data.get("required", False)),
            help=str(data.get("help") or ""),
            options=options,
        )


# Collection-level keys other than the common ones, per type, in PocketBase's JSON order.
AUTH_OPTION_KEYS: tuple[str, ...] = (
    "authRule",
    "manageRule",
    "authAlert",
    "oauth2",
    "passwordAuth",
    "mfa",
    "otp",
    "authToken",
    "passwordResetToken",
    "emailChangeToken",
    "verificationToken",
    "fileToken",
    "verificationTemplate",
    "resetPasswordTemplate",
    "confirmEmailChangeTemplate",
)
VIEW_OPTION_KEYS: tuple[str, ...] = ("viewQuery",)
RULE_NAMES: tuple[str, ...] = ("listRule", "viewRule", "createRule", "updateRule", "deleteRule")


@dataclass
class Collection:
    """One collection: its metadata row in `_collections` and its table named `name`.

    `options` holds the type-specific collection keys: for `view` `{"viewQuery": ...}`, for
    `auth` the keys of `AUTH_OPTION_KEYS` (`authRule`, `manageRule`, `passwordAuth`,
    `authToken`, ...). Rules are `None` (superusers only), `""` (everyone) or a filter.
    """

    name: str
    type: str = "base"
    id: str = ""
    system: bool = False
    fields: list[Field] = dataclasses.field(default_factory=list)
    indexes: list[str] = dataclasses.field(default_factory=list)
    listRule: str | None = None  # PocketBase JSON names
    viewRule: str | None = None
    createRule: str | None = None
    updateRule: str | None = None
    deleteRule: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = ""
    updated: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = "pbc_" + crc32_checksum(self.type + self.name)

    # ------------------------------------------------------------------ helpers
    def field(self, name: str) -> Field | None:
        """The field called `name` (case-sensitive, as PocketBase), or None."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def field_by_id(self, field_id: str) -> Field | None:
        for f in self.fields:
            if f.id == field_id:
                return f
        return None

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def rule(self, name: str) -> str | None:
        """One of `RULE_NAMES` (or `authRule`/`manageRule` of an auth collection)."""
        if name in RULE_NAMES:
            value: str | None = getattr(self, name)
            return value
        raw = self.options.get(name)
        return None if raw is None else str(raw)

    def option_object(self, name: str) -> dict[str, Any]:
        """An object-valued collection option (`mfa`, `otp`, `authToken`...), `{}` if unset."""
        value = self.options.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def is_auth(self) -> bool:
        return self.type == "auth"

    @property
    def is_view(self) -> bool:
        return self.type == "view"

    @property
    def is_base(self) -> bool:
        return self.type == "base"

    @property
    def view_query(self) -> str:
        return str(self.options.get("viewQuery") or "")

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """PocketBase's JSON for this collection (`GET /api/collections/NAME`)."""
        out: dict[str, Any] = {
            "id": self.id,
            "listRule": self.listRule,
            "viewRule": self.viewRule,
            "createRule": self.createRule,
            "updateRule": self.updateRule,
            "deleteRule": self.deleteRule,
            "name": self.name,
            "type": self.type,
            "fields": [f.to_json() for f in self.fields],
            "indexes": list(self.indexes),
            "created": self.created,
            "updated": self.updated,
            "system": self.system,
        }
        keys = AUTH_OPTION_KEYS if self.is_auth else VIEW_OPTION_KEYS if self.is_view else ()
        for key in keys:
            if key in self.options:
                value = copy.deepcopy(self.options[key])
                if isinstance(value, dict):
                    value.pop("secret", None)  # token secrets never leave the database
                    providers = value.get("providers") if key == "oauth2" else None
                    for provider in providers or []:
                        if isinstance(provider, dict):
                            provider.pop("clientSecret", None)  # nor do OAuth2 client secrets
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Collection:
        """A collection from PocketBase's JSON (no validation; see the validator)."""
        ctype = str(data.get("type") or "base")
        keys = AUTH_OPTION_KEYS if ctype == "auth" else VIEW_OPTION_KEYS if ctype == "view" else ()
        raw_fields = data.get("fields") or []
        return cls(
            name=str(data.get("name") or ""),
            type=ctype,
            id=str(data.get("id") or ""),
            system=bool(data.get("system", False)),
            fields=[Field.from_json(f) for f in raw_fields if isinstance(f, dict)],
            indexes=[str(i) for i in (data.get("indexes") or [])],
            listRule=_rule(data.get("listRule")),
            viewRule=_rule(data.get("viewRule")),
            createRule=_rule(data.get("createRule")),
            updateRule=_rule(data.get("updateRule")),
            deleteRule=_rule(data.get("deleteRule")),
            options={k: copy.deepcopy(data[k]) for k in keys if k in data},
            created=str(data.get("created") or ""),
            updated=str(data.get("updated") or ""),
        )

    # ------------------------------------------------------------------ _collections row
    def to_row(self) -> dict[str, Any]:
        """The `_collections` row (column -> SQLite value) of this collection."""
        return {
            "id": self.id,
            "system": 1 if self.system else 0,
            "type": self.type,
            "name": self.name,
            "fields": orjson.dumps([f.to_json() for f in self.fields]).decode(),
            "indexes": orjson.dumps(self.indexes).decode(),
            "listRule": self.listRule,
            "viewRule": self.viewRule,
            "createRule": self.createRule,
            "updateRule": self.updateRule,
            "deleteRule": self.deleteRule,
            "options": orjson.dumps(self.options).decode(),
            "created": self.created,
            "updated": self.updated,
        }

    @classmethod
    def from_row(cls, row: Any) -> Collection:
        """A collection from a `_collections` row (a mapping or `sqlite3.Row`)."""
        data: dict[str, Any] = {k: row[k] for k in COLLECTIONS_COLUMNS}
        data["system"] = bool(data["system"])
        data["fields"] = orjson.loads(data["fields"] or "[]")
        data["indexes"] = orjson.loads(data["indexes"] or "[]")
        data.update(orjson.loads(data.pop("options") or "{}"))
        return cls.from_json(data)


def _rule(value: Any) -> str | None:
    return None if value is None else str(value)


COLLECTIONS_TABLE = "_collections"
COLLECTIONS_COLUMNS: tuple[str, ...] = (
    "id",
    "system",
    "type",
    "name",
    "fields",
    "indexes",
    "listRule",
    "viewRule",
    "createRule",
    "updateRule",
    "deleteRule",
    "options",
    "created",
    "updated",
)
# Exactly PocketBase's `_collections` schema.
COLLECTIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS `_collections` (
    `id`         TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
    `system`     BOOLEAN DEFAULT FALSE NOT NULL,
    `type`       TEXT DEFAULT "base" NOT NULL,
    `name`       TEXT UNIQUE NOT NULL,
    `fields`     JSON DEFAULT "[]" NOT NULL,
    `indexes`    JSON DEFAULT "[]" NOT NULL,
    `listRule`   TEXT DEFAULT NULL,
    `viewRule`   TEXT DEFAULT NULL,
    `createRule` TEXT DEFAULT NULL,
    `updateRule` TEXT DEFAULT NULL,
    `deleteRule` TEXT DEFAULT NULL,
    `options`    JSON DEFAULT "{}" NOT NULL,
    `created`    TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,
    `updated`    TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
);
CREATE INDEX IF NOT EXISTS idx__collections_type on `_collections` (`type`);
"""


class CollectionLookup(Protocol):
    """Read access to the current collections (implemented by the runtime's schema cache).

    `find` accepts a collection id or name and returns None when there is none; the returned
    objects must be treated as read-only snapshots.
    """

    def find(self, name_or_id: str) -> Collection | None: ...

    def all(self) -> list[Collection]: ...
