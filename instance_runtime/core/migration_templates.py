"""The Python sources of generated migrations (PocketBase's `plugins/migratecmd/templates.go`).

Contract: every function returns the text of a `pb_migrations/*.py` file that `core.migrations`
loads, whose `up(app)` / `down(app)` take a `hooks.services.MigrationApp`:

- `blank()`: `migrate create NAME` (empty up and down).
- `snapshot(collections)`: `migrate collections`: up imports the collections' JSON
  (`import_collections(snapshot, delete_missing=False)`, as PocketBase's snapshot), down does
  nothing.
- `created(collection)` / `deleted(collection)`: automigrate's files for a collection created /
  deleted through the API: up saves (deletes) it, down deletes (saves) it back.
- `updated(new, old)`: the change from `old` to `new` as PocketBase diffs it (its changed keys
  merged in with `draft.update`, fields removed, added and changed by position), and down the
  reverse; None when nothing changed.

The collections' JSON is their API JSON without `created`, `updated` and `oauth2.providers`
(PocketBase keeps OAuth2 provider settings out of migrations; token secrets are never in the
JSON), written as Python literals with sorted keys.
"""

from __future__ import annotations

import json
from typing import Any

from instance_runtime.core.models import Collection

_HEADER = "from instance_runtime.hooks import MigrationApp\n"
_INDENT = "    "


def _module(up: list[str], down: list[str]) -> str:
    """A migration file with `up` and `down` bodies (lines without their indentation)."""

    def body(lines: list[str]) -> str:
        physical = [line for text in lines for line in text.split("\n")]
        return "\n".join(_INDENT + line if line else "" for line in physical)

    return (
        f"{_HEADER}\n\n"
        f"def up(app: MigrationApp) -> None:\n{body(up)}\n\n\n"
        f"def down(app: MigrationApp) -> None:\n{body(down)}\n"
    )


def blank() -> str:
    """See the module docstring."""
    return _module(["# add up queries...", "pass"], ["# add down queries...", "pass"])


def collection_data(collection: Collection) -> dict[str, Any]:
    """A collection's JSON as migrations hold it (see the module docstring)."""
    data = collection.to_json()
    data.pop("created", None)
    data.pop("updated", None)
    oauth2 = data.get("oauth2")
    if isinstance(oauth2, dict):
        oauth2.pop("providers", None)
    return data


def snapshot(collections: list[Collection]) -> str:
    """See the module docstring."""
    items = literal([collection_data(c) for c in collections])
    up = [f"snapshot = {items}", "", "app.collections.import_collections(snapshot, False)"]
    return _module(up, ["pass"])


def created(collection: Collection) -> str:
    """See the module docstring."""
    data = literal(collection_data(collection))
    return _module(
        [f"app.collections.save({data})"], [f"app.collections.delete({_str(collection.id)})"]
    )


def deleted(collection: Collection) -> str:
    """See the module docstring."""
    data = literal(collection_data(collection))
    return _module(
        [f"app.collections.delete({_str(collection.id)})"], [f"app.collections.save({data})"]
    )


def updated(new: Collection, old: Collection) -> str | None:
    """See the module docstring."""
    new_map, old_map = collection_data(new), collection_data(old)
    up: list[str] = []
    down: list[str] = []
    excluded = ("fields", "created", "updated")
    up_diff = diff_maps(old_map, new_map, excluded)
    if up_diff:
        up += ["# update collection data", f"collection.update({literal(up_diff)})", ""]
        down_diff = diff_maps(new_map, old_map, excluded)
        down += ["# update collection data", f"collection.update({literal(down_diff)})", ""]
    old_fields: list[dict[str, Any]] = old_map["fields"]
    new_fields: list[dict[str, Any]] = new_map["fields"]
    new_ids = {f["id"] for f in new_fields}
    old_ids = {f["id"] for f in old_fields}
    for i, field in enumerate(old_fields):
        if field["id"] not in new_ids:
            up += ["# remove field", f"collection.remove_field_by_id({_str(field['id'])})", ""]
            down += ["# add field", f"collection.add_field_at({i}, {literal(field)})", ""]
    for i, field in enumerate(new_fields):
        if field["id"] not in old_ids:
            up += ["# add field", f"collection.add_field_at({i}, {literal(field)})", ""]
            down += ["# remove field", f"collection.remove_field_by_id({_str(field['id'])})", ""]
    # changed fields (a change of order alone is ignored, as PocketBase does)
    for i, field in enumerate(new_fields):
        j, before = next(
            ((j, f) for j, f in enumerate(old_fields) if f["id"] == field["id"]), (0, None)
        )
        if before is None or _json(before) == _json(field):
            continue
        up += ["# update field", f"collection.add_field_at({i}, {literal(field)})", ""]
        down += ["# update field", f"collection.add_field_at({j}, {literal(before)})", ""]
    if not up and not down:
        return None

    def wrap(lines: list[str], collection_id: str) -> list[str]:
        return [
            f"collection = app.collections.draft({_str(collection_id)})",
            "",
            *lines,
            "app.collections.save(collection)",
        ]

    return _module(wrap(up, old.id), wrap(down, new.id))


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def diff_maps(
    old: dict[str, Any], new: dict[str, Any], excluded: tuple[str, ...] = ()
) -> dict[str, Any]:
    """PocketBase's `diffMaps`: the keys of `new` that differ from `old` (objects recursively,
    only their changed members), and None for the keys `old` has and `new` lacks."""
    diff: dict[str, Any] = {}
    for key, value in new.items():
        if key in excluded:
            continue
        if key not in old:
            diff[key] = value
            continue
        before = old[key]
        if _json(before) == _json(value):
            continue
        if isinstance(before, dict) and isinstance(value, dict):
            nested = diff_maps(before, value)
            if nested:
                diff[key] = nested
        else:
            diff[key] = value
    for key in old:
        if key not in diff and key not in excluded and key not in new:
            diff[key] = None
    return diff


# ---------------------------------------------------------------------------- Python literals
def _str(text: str) -> str:
    """A Python string literal of `text` (JSON's escapes are Python's)."""
    quoted = json.dumps(text, ensure_ascii=False)
    try:
        quoted.encode()
    except UnicodeEncodeError:  # lone surrogates: escape everything
        quoted = json.dumps(text)
    return quoted


def literal(value: Any, level: int = 0) -> str:
    """`value` (JSON data) as a Python literal: keys sorted, one item a line, trailing commas,
    the inner lines indented one level deeper than `level` (the line it starts on)."""
    inner = _INDENT * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_str(str(k))}: {literal(value[k], level + 1)}," for k in sorted(value)]
        return "{\n" + "\n".join(items) + "\n" + _INDENT * level + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{inner}{literal(item, level + 1)}," for item in value]
        return "[\n" + "\n".join(items) + "\n" + _INDENT * level + "]"
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    return _str(str(value))
