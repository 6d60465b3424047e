"""Per-collection plans for the hot record paths: a row to a record, a record to its JSON.

Contract: `codec_of(coll)` returns the `Codec` of `coll`, built once per `Collection` object
and kept while that object's field list is the same list of the same length (collections of
a live `Schema` are never changed in place otherwise: a change builds new objects).

- `codec.decode(row)` is `records.row_to_record(coll, codec.names, row)` for a row of
  `records.select_columns(coll)` (`codec.names`: every field's name, in order): the same
  record, each column through its field's `fields.from_db_decoder`.
- `codec.serialize(record, info, expand, show_email)` is `records.serialize(...)`: the same
  keys, values and (sorted) key order, from an order of keys worked out once. Only when
  `codec.fast`: a collection with a field named like a key the serializer adds
  (`collectionId`, `collectionName`, `expand`) is left to `records.serialize`'s general path.
- `email_visible(coll, record, info)`: whether an auth record's email is shown to `info`
  whatever manages it (visible, a superuser, the record itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from instance_runtime.core.fields import from_db_decoder
from instance_runtime.core.models import Collection
from instance_runtime.core.request_info import RequestInfo

Record = dict[str, Any]

_ADDED_KEYS = ("collectionId", "collectionName", "expand")
_CONSTANT, _VALUE, _EMPTY, _EXPAND = range(4)  # what a serialized key holds
_CACHE_MAX = 1024
_MISSING: Any = object()


def email_visible(coll: Collection, record: Record, info: RequestInfo) -> bool:
    """See the module docstring."""
    if info.is_superuser or record.get("emailVisibility"):
        return True
    return (
        info.auth is not None
        and info.auth_collection is not None
        and info.auth_collection.id == coll.id
        and info.auth_id == record.get("id")
    )


class Codec:
    """See the module docstring."""

    __slots__ = ("_columns", "_entries", "_fields", "_size", "coll", "fast", "names")

    def __init__(self, coll: Collection) -> None:
        self.coll = coll
        self._fields = coll.fields
        self._size = len(coll.fields)
        self._columns: list[tuple[str, Callable[[Any], Any]]] = [
            (f.name, from_db_decoder(f)) for f in coll.fields
        ]
        self.names = [f.name for f in coll.fields]
        names = {f.name for f in coll.fields}
        self.fast = not names.intersection(_ADDED_KEYS)
        # (key, what, payload, hidden, is_email), in the serialized (sorted) order
        entries: list[tuple[str, int, Any, bool, bool]] = [
            ("collectionId", _CONSTANT, coll.id, False, False),
            ("collectionName", _CONSTANT, coll.name, False, False),
            ("expand", _EXPAND, None, False, False),
        ]
        for f in coll.fields:
            if coll.is_auth and f.name in ("password", "tokenKey"):
                continue  # never exported, not even to superusers
            what = _EMPTY if f.type == "password" else _VALUE
            is_email = coll.is_auth and f.name == "email"
            entries.append((f.name, what, f, f.hidden, is_email))
        entries.sort(key=lambda entry: entry[0])
        self._entries = entries

    def is_current(self, coll: Collection) -> bool:
        return coll.fields is self._fields and len(coll.fields) == self._size

    def decode(self, row: Sequence[Any]) -> Record:
        """See the module docstring (`row` has one value per field)."""
        return {name: decode(raw) for (name, decode), raw in zip(self._columns, row, strict=True)}

    def serialize(
        self,
        record: Record,
        info: RequestInfo,
        expand: dict[str, Any] | None = None,
        *,
        show_email: bool = False,
    ) -> dict[str, Any]:
        """See the module docstring (only when `self.fast`)."""
        superuser = info.is_superuser
        out: dict[str, Any] = {}
        for key, what, payload, hidden, is_email in self._entries:
            if what == _VALUE:
                if hidden and not superuser:
                    continue
                if is_email and not show_email and not email_visible(self.coll, record, info):
                    continue
                value = record.get(key, _MISSING)
                out[key] = payload.zero_value() if value is _MISSING else value
            elif what == _CONSTANT:
                out[key] = payload
            elif what == _EXPAND:
                if expand is not None:
                    out[key] = expand
            elif not hidden or superuser:  # _EMPTY: a password field
                out[key] = ""
        return out


_codecs: dict[int, Codec] = {}


def codec_of(coll: Collection) -> Codec:
    """See the module docstring."""
    found = _codecs.get(id(coll))
    if found is not None and found.coll is coll and found.is_current(coll):
        return found
    if len(_codecs) >= _CACHE_MAX:
        _codecs.clear()
    codec = _codecs[id(coll)] = Codec(coll)
    return codec
