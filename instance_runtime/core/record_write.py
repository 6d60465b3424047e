"""Writing records: create, update (with `field+`/`+field`/`field-` modifiers), delete.

Contract: every function runs inside the caller's write transaction on the writer connection
and raises `ApiError` to refuse; the caller's transaction is then rolled back, so a refused
write (validation, a create failing its rule, a delete blocked by a required relation) leaves
nothing behind.

- `create(conn, schema, coll, data, info)` -> the new record. Superusers skip rules; others
  need `createRule` not None (403) and the new record must pass it (400, nothing written).
- `update(conn, schema, coll, record_id, data, info)` -> the updated record (404 when missing
  or hidden by `updateRule`).
- `save(conn, schema, coll, record, hooks=..., original=...)` writes a record as the app itself
  does (no rules; for the auth flows and system collections); `remove(...)` deletes one so.
- Each runs through the model hooks of `hooks` (`on_record_create` / `update` / `delete`, whose
  `next()` validates through `on_record_validate` and writes; a handler may change the record
  first) and defers the matching `..._success` event until the commit.
- `delete(conn, schema, coll, record_id, info)` cascades as PocketBase (`cascadeRecordDelete`):
  the record's row goes first, then its references, collection by collection in name order:
  one with `cascadeDelete` and no other id left is deleted as `remove` does (its own
  `on_record_delete`, its own references, its success event after the commit), any other loses
  the id as the app saves without validation (`on_record_update` without `on_record_validate`,
  `updated` stamped, the update's success event), and a required relation left empty refuses
  the delete (400, the whole transaction rolled back). The success events of cascaded records
  come before the one of the record that caused them. A deleted record's files (cascaded ones
  too) go after the commit (`files.forget_record`).
- `delete_cascade(conn, schema, coll, id, hooks=None)` is that step alone; without `hooks`
  (the auth flows' own system records) references are resolved by plain SQL, without events.
- `create`/`update` take `file_errors` (from `core.files.prepare`) refused with the others,
  except those of hidden fields for non-superusers (their values are ignored, as PocketBase).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from instance_runtime.core import fields as fv
from instance_runtime.core import files
from instance_runtime.core.app import on_commit
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.errors import (
    ApiError,
    FieldError,
    ValidationErrors,
    bad_request,
    required,
    superusers_only,
)
from instance_runtime.core.events import RecordEvent, RecordSuccessEvent
from instance_runtime.core.hooks import Hook
from instance_runtime.core.models import Collection, Field, now_datetime
from instance_runtime.core.records import Record, check_rule, fetch_many, find
from instance_runtime.core.request_info import SUPERUSERS, RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools import security
from instance_runtime.tools.dbutils import quote

_ID_RE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def apply_modifiers(coll: Collection, record: Record, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with `name+`, `+name`, `name-` keys folded into plain values (PocketBase's
    `ReplaceModifiers`)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if coll.field(key) is not None or not (key.endswith(("+", "-")) or key.startswith("+")):
            out[key] = value
    for key, value in data.items():
        if key.startswith("+"):
            name, op = key[1:], "prepend"
        elif key.endswith("+"):
            name, op = key[:-1], "append"
        elif key.endswith("-"):
            name, op = key[:-1], "remove"
        else:
            continue
        f = coll.field(name)
        if f is None:
            continue
        current = out.get(name, record.get(name, f.zero_value()))
        if f.type == "number":
            delta = fv.to_float(value)
            base = fv.to_float(current)
            out[name] = base - delta if op == "remove" else base + delta
        elif f.type in ("select", "relation", "file"):
            existing = fv.to_str_list(current)
            given = fv.to_str_list(value)
            if op == "remove":
                out[name] = [v for v in existing if v not in given]
            elif op == "prepend":
                out[name] = given + [v for v in existing if v not in given]
            else:
                out[name] = existing + [v for v in given if v not in existing]
        elif f.type in ("text", "editor"):
            if op == "append":
                out[name] = fv.to_str(current) + fv.to_str(value)
            elif op == "prepend":
                out[name] = fv.to_str(value) + fv.to_str(current)
    return out


def _strip_hidden(coll: Collection, data: dict[str, Any], info: RequestInfo) -> dict[str, Any]:
    if info.is_superuser:
        return data
    out = dict(data)
    for f in coll.fields:
        if f.hidden and not (coll.is_auth and f.name == "password"):
            out.pop(f.name, None)
    return out


def _validate_relations(
    conn: sqlite3.Connection, schema: Schema, f: Field, value: Any
) -> FieldError | None:
    ids = value if isinstance(value, list) else ([value] if value else [])
    if not ids:
        return None
    target = schema.find(f.collection_id)
    if target is None:
        return FieldError(
            "validation_missing_rel_collection",
            "Relation connection is missing or cannot be accessed",
        )
    found = fetch_many(conn, target, list(ids))
    if len(found) != len(set(ids)):
        return FieldError(
            "validation_missing_rel_records",
            "Failed to find all relation records with the provided ids",
        )
    return None


def _prepare_record(
    coll: Collection,
    record: Record,
    data: dict[str, Any],
    *,
    is_new: bool,
    manager: bool,
) -> tuple[Record, ValidationErrors]:
    """`record` with `data` applied (values converted, passwords hashed, autogenerated values),
    and the errors found doing it; the values themselves are checked by `_validate`."""
    errors: ValidationErrors = {}
    new = dict(record)
    plain_passwords: dict[str, str] = {}
    stamp = now_datetime()  # one moment for every autodate field of this write
    for f in coll.fields:
        if f.type == "autodate":
            if (is_new and f.opt("onCreate")) or f.opt("onUpdate"):
                new[f.name] = stamp
            continue
        if f.name == "id":
            if is_new and "id" in data and fv.to_str(data["id"]):
                new["id"] = fv.to_str(data["id"])
            elif is_new:
                new["id"] = _autogenerate(str(f.opt("autogeneratePattern") or ""))
            elif "id" in data and fv.to_str(data["id"]) != record["id"]:
                errors["id"] = FieldError(
                    "validation_pk_change", "The record primary key cannot be changed."
                )
            continue
        if f.name not in data:
            if f.type == "password" and is_new and f.required:
                errors[f.name] = required()
            continue
        if f.type == "password":
            plain = fv.to_str(data[f.name])
            if not plain and not is_new:
                continue
            plain_passwords[f.name] = plain
            err = fv.validate_password(f, plain)
            if err is not None:
                errors[f.name] = err
            else:
                new[f.name] = security.hash_password(plain, int(f.opt("cost") or 0))
            continue
        new[f.name] = fv.prepare(f, data[f.name])
    for f in coll.fields:
        pattern = str(f.opt("autogeneratePattern") or "") if f.type == "text" else ""
        if pattern and f.name != "id" and not new.get(f.name):
            new[f.name] = _autogenerate(pattern)
    if coll.is_auth:
        _prepare_auth(
            coll, record, new, data, plain_passwords, errors, is_new=is_new, manager=manager
        )
    return new, errors


def _validate(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record: Record,
    errors: ValidationErrors,
    *,
    is_new: bool,
) -> None:
    """Add to `errors` what is wrong with the values of `record` (fields without an error)."""
    for f in coll.fields:
        if f.name in errors or f.type in ("password", "autodate"):
            continue
        if f.name == "id":
            err = _validate_id(f, str(record["id"])) if is_new else None
        else:
            err = fv.validate(f, record.get(f.name, f.zero_value()))
        if err is None and f.type == "relation":
            err = _validate_relations(conn, schema, f, record.get(f.name))
        if err is not None:
            errors[f.name] = err


_PATTERN_RE = re.compile(r"^\[([^\]]+)\]\{(\d+)\}$")


def _autogenerate(pattern: str) -> str:
    """A value for an `autogeneratePattern` of the form `[charset]{n}` (PocketBase's common
    case); other patterns fall back to 15 `[a-z0-9]` characters."""
    match = _PATTERN_RE.match(pattern)
    if not match:
        return security.new_record_id()
    chars: list[str] = []
    spec = match.group(1)
    i = 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            chars.extend(chr(c) for c in range(ord(spec[i]), ord(spec[i + 2]) + 1))
            i += 3
        else:
            chars.append(spec[i])
            i += 1
    return security.random_string(int(match.group(2)), "".join(chars))


def _validate_id(f: Field, value: str) -> FieldError | None:
    err = fv.validate(f, value)
    if err is not None:
        return err
    if f.opt("pattern") == "^[a-z0-9]+$" and not set(value) <= _ID_RE_CHARS:
        return FieldError("validation_invalid_format", "Invalid value format.")
    return None


def _prepare_auth(
    coll: Collection,
    old: Record,
    new: Record,
    data: dict[str, Any],
    plain_passwords: dict[str, str],
    errors: ValidationErrors,
    *,
    is_new: bool,
    manager: bool,
) -> None:
    """PocketBase's checks of an auth record's system fields (`forms.RecordUpsert`): without
    manage access (superusers, or `manageRule`) `email` cannot change on update and `verified`
    not at all, and a new password needs `oldPassword`; `passwordConfirm` must match."""
    password = plain_passwords.get("password", "")
    confirm = fv.to_str(data.get("passwordConfirm", ""))
    old_plain = fv.to_str(data.get("oldPassword", ""))
    mismatch = FieldError("validation_values_mismatch", "Values don't match.")
    if "password" not in errors and not password and (is_new or confirm or old_plain):
        errors["password"] = required()
    if not confirm and (is_new or password or old_plain):
        errors["passwordConfirm"] = required()
    elif confirm != password:
        errors["passwordConfirm"] = mismatch
    if not is_new and not manager and (password or confirm):
        if not old_plain:
            errors["oldPassword"] = required()
        elif not security.check_password(old_plain, str(old.get("password", ""))):
            errors["oldPassword"] = FieldError(
                "validation_invalid_old_password", "Missing or invalid old password."
            )
    if not is_new and not manager and new.get("email") != old.get("email"):
        errors.setdefault("email", mismatch)
    if coll.name == SUPERUSERS:
        new["verified"] = True  # superusers are always verified
    elif not manager and bool(new.get("verified")) != bool(old.get("verified")):
        errors.setdefault("verified", mismatch)
    if password and "password" not in errors:
        new["tokenKey"] = security.random_string(50)
    elif not is_new and new.get("email") != old.get("email"):
        new["tokenKey"] = security.random_string(50)  # PocketBase: a new email revokes too
    if is_new and not new.get("tokenKey"):
        new["tokenKey"] = security.random_string(50)


def has_manage_access(
    conn: sqlite3.Connection, schema: Schema, coll: Collection, record_id: str, info: RequestInfo
) -> bool:
    """Whether the request may manage auth record `record_id` (PocketBase's
    `hasAuthManageAccess`): superusers, or an auth whose `manageRule` (never an empty one)
    matches the record."""
    if info.is_superuser:
        return True
    rule = coll.rule("manageRule") if coll.is_auth else None
    if not rule or info.auth is None:
        return False
    return check_rule(conn, schema, coll, rule, record_id, info)


def _unique_errors(coll: Collection, exc: sqlite3.IntegrityError) -> ValidationErrors:
    text = str(exc)
    errors: ValidationErrors = {}
    if "UNIQUE constraint failed" in text:
        for part in text.split(":", 1)[1].split(","):
            column = part.strip().rsplit(".", 1)[-1]
            if coll.field(column) is not None:
                errors[column] = FieldError("validation_not_unique", "Value must be unique.")
    return errors


def _write_row(
    conn: sqlite3.Connection, coll: Collection, record: Record, *, is_new: bool, old_id: str = ""
) -> None:
    values = {f.name: fv.to_db(f, record.get(f.name, f.zero_value())) for f in coll.fields}
    if is_new:
        cols = ", ".join(quote(n) for n in values)
        marks = ", ".join(f":c{i}" for i in range(len(values)))
        sql = f"INSERT INTO {quote(coll.name)} ({cols}) VALUES ({marks})"
    else:
        sets = ", ".join(f"{quote(n)} = :c{i}" for i, n in enumerate(values))
        sql = f"UPDATE {quote(coll.name)} SET {sets} WHERE id = :_old_id"
    params = {f"c{i}": v for i, v in enumerate(values.values())}
    if not is_new:
        params["_old_id"] = old_id
    conn.execute(sql, params)


def _checked_save(
    event: RecordEvent,
    hooks: AppHooks,
    errors: ValidationErrors,
    *,
    is_new: bool,
    message: str,
) -> None:
    """Validate `event.record` (through `on_record_validate`) and write it."""
    conn, coll = event.conn, event.collection

    def check(e: RecordEvent) -> None:
        found = dict(errors)
        _validate(e.conn, e.schema, e.collection, e.record, found, is_new=is_new)
        if found:
            raise bad_request(message, found)

    hooks.on_record_validate.trigger(event, check)
    old, new = event.original, event.record
    # as PocketBase's onRecordSaveExecute: a new password or email revokes every token
    if (
        coll.is_auth
        and old is not None
        and old.get("tokenKey") == new.get("tokenKey")
        and any(old.get(k) != new.get(k) for k in ("password", "email"))
    ):
        new["tokenKey"] = security.random_string(50)
    old_id = "" if event.original is None else str(event.original["id"])
    try:
        _write_row(conn, coll, event.record, is_new=is_new, old_id=old_id)
    except sqlite3.IntegrityError as exc:
        raise bad_request(message, _unique_errors(coll, exc)) from exc


def _after_commit(hook: Hook[RecordSuccessEvent], event: RecordSuccessEvent) -> None:
    if len(hook):
        on_commit(lambda: hook.trigger(event, _done))


def _done(_event: Any) -> None:
    return None


def create(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    data: dict[str, Any],
    info: RequestInfo,
    *,
    hooks: AppHooks,
    file_errors: ValidationErrors | None = None,
) -> Record:
    """See the module docstring."""
    if coll.is_view:
        raise ApiError(400, "Unsupported collection type.")
    if coll.createRule is None and not info.is_superuser:
        raise superusers_only()
    blank = {f.name: f.zero_value() for f in coll.fields}
    data = apply_modifiers(coll, blank, _strip_hidden(coll, data, info))
    manager = info.is_superuser
    record, errors = _prepare_record(coll, blank, data, is_new=True, manager=manager)
    errors.update(_strip_hidden(coll, dict(file_errors or {}), info))  # hidden: ignored
    event = RecordEvent(conn, schema, coll, record, info)
    message = "Failed to create record."

    def save(e: RecordEvent) -> None:
        _checked_save(e, hooks, errors, is_new=True, message=message)
        rule = e.collection.createRule
        rid = str(e.record["id"])
        if not info.is_superuser and rule and not check_rule(conn, schema, coll, rule, rid, info):
            raise bad_request(message)

    hooks.on_record_create.trigger(event, save)
    _after_commit(
        hooks.on_record_after_create_success, RecordSuccessEvent(coll, event.record, "create")
    )
    return event.record


def update(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record_id: str,
    data: dict[str, Any],
    info: RequestInfo,
    *,
    hooks: AppHooks,
    file_errors: ValidationErrors | None = None,
) -> Record:
    """See the module docstring."""
    if coll.is_view:
        raise ApiError(400, "Unsupported collection type.")
    if coll.updateRule is None and not info.is_superuser:
        raise superusers_only()
    old = find(conn, coll, record_id)
    if old is None or not check_rule(conn, schema, coll, coll.updateRule, record_id, info):
        raise ApiError(404, "The requested resource wasn't found.")
    data = apply_modifiers(coll, old, _strip_hidden(coll, data, info))
    manager = has_manage_access(conn, schema, coll, record_id, info)
    record, errors = _prepare_record(coll, old, data, is_new=False, manager=manager)
    errors.update(_strip_hidden(coll, dict(file_errors or {}), info))  # hidden: ignored
    event = RecordEvent(conn, schema, coll, record, info, original=old)
    hooks.on_record_update.trigger(
        event,
        lambda e: _checked_save(e, hooks, errors, is_new=False, message="Failed to update record."),
    )
    _after_commit(
        hooks.on_record_after_update_success,
        RecordSuccessEvent(coll, event.record, "update", original=old),
    )
    return event.record


def delete(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record_id: str,
    info: RequestInfo,
    *,
    hooks: AppHooks,
) -> None:
    """See the module docstring."""
    if coll.is_view:
        raise ApiError(400, "Unsupported collection type.")
    if coll.deleteRule is None and not info.is_superuser:
        raise superusers_only()
    record = find(conn, coll, record_id)
    if record is None or not check_rule(conn, schema, coll, coll.deleteRule, record_id, info):
        raise ApiError(404, "The requested resource wasn't found.")

    def remove(e: RecordEvent) -> None:
        try:
            if coll.name == SUPERUSERS:
                total = conn.execute(f"SELECT COUNT(*) FROM {quote(coll.name)}").fetchone()[0]
                if total <= 1:
                    raise _RequiredReferenceError("the last superuser cannot be deleted")
            delete_cascade(conn, schema, coll, record_id, hooks=hooks)
        except _RequiredReferenceError as exc:
            raise bad_request(
                "Failed to delete record. Make sure that the record is not part of a required "
                "relation reference."
            ) from exc

    hooks.on_record_delete.trigger(RecordEvent(conn, schema, coll, record, info), remove)
    _after_commit(hooks.on_record_after_delete_success, RecordSuccessEvent(coll, record, "delete"))


def save(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record: Record,
    *,
    hooks: AppHooks,
    original: Record | None = None,
) -> Record:
    """Write `record` as the app itself does (PocketBase's `app.Save`): no API rule and no
    request data, but validated and through the model hooks. `original` is the stored record
    of an update (None creates one: a missing id, or a missing `tokenKey` of an auth record, is
    generated). Autodate fields are stamped; password fields must hold a hash already.
    Returns the record as written; raises `ApiError` (400) when it does not validate."""
    is_new = original is None
    new = {f.name: f.zero_value() for f in coll.fields} if is_new else dict(original or {})
    new.update(record)
    stamp = now_datetime()
    for f in coll.fields:
        if f.type == "autodate" and ((is_new and f.opt("onCreate")) or f.opt("onUpdate")):
            new[f.name] = stamp
    if is_new and not new.get("id"):
        new["id"] = security.new_record_id()
    if coll.is_auth and not new.get("tokenKey"):
        new["tokenKey"] = security.random_string(50)
    event = RecordEvent(conn, schema, coll, new, RequestInfo(), original=original)
    message = "Failed to create record." if is_new else "Failed to update record."
    hook = hooks.on_record_create if is_new else hooks.on_record_update
    hook.trigger(event, lambda e: _checked_save(e, hooks, {}, is_new=is_new, message=message))
    if is_new:
        success = RecordSuccessEvent(coll, event.record, "create")
        _after_commit(hooks.on_record_after_create_success, success)
    else:
        success = RecordSuccessEvent(coll, event.record, "update", original=original)
        _after_commit(hooks.on_record_after_update_success, success)
    return event.record


def remove(
    conn: sqlite3.Connection, schema: Schema, coll: Collection, record: Record, *, hooks: AppHooks
) -> None:
    """Delete `record` as the app itself does (PocketBase's `app.Delete`): no API rule, through
    `on_record_delete` (references resolved as `delete` does) and the success event."""

    def drop(e: RecordEvent) -> None:
        delete_cascade(conn, schema, coll, str(record["id"]), hooks=hooks)

    hooks.on_record_delete.trigger(RecordEvent(conn, schema, coll, record, RequestInfo()), drop)
    _after_commit(hooks.on_record_after_delete_success, RecordSuccessEvent(coll, record, "delete"))


class _RequiredReferenceError(Exception):
    pass


def delete_cascade(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    rid: str,
    *,
    hooks: AppHooks | None = None,
) -> None:
    """Delete record `rid` of `coll` and resolve every reference to it (see module docstring)."""
    conn.execute(f"DELETE FROM {quote(coll.name)} WHERE id = ?", (rid,))
    files.forget_record(conn, coll, rid)
    refs = sorted(schema.referencing(coll.id), key=lambda cf: cf[0].name)
    for ref_coll, f in refs:
        if ref_coll.is_view:
            continue
        table, col = quote(ref_coll.name), quote(f.name)
        if f.is_multiple:
            sql = (
                f"SELECT id FROM {table} WHERE EXISTS "
                f"(SELECT 1 FROM json_each(CASE WHEN json_valid({table}.{col}) "
                f"THEN {table}.{col} ELSE json_array({table}.{col}) END) je WHERE je.value = ?)"
            )
        else:
            sql = f"SELECT id FROM {table} WHERE {col} = ?"
        for (ref_id,) in conn.execute(sql, (rid,)).fetchall():
            # read again: an earlier cascade (or a hook) may have changed or deleted it
            ref = find(conn, ref_coll, str(ref_id))
            ids = fv.to_str_list(ref.get(f.name)) if ref is not None else []
            if ref is None or rid not in ids:
                continue
            ids = [i for i in ids if i != rid]
            if f.opt("cascadeDelete") and not ids:
                if hooks is None:
                    delete_cascade(conn, schema, ref_coll, str(ref_id))
                else:
                    remove(conn, schema, ref_coll, ref, hooks=hooks)
                continue
            if f.required and not ids:
                raise _RequiredReferenceError(ref_id)
            _unlink(conn, schema, ref_coll, f, ref, ids, hooks)


def _unlink(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    f: Field,
    ref: Record,
    ids: list[str],
    hooks: AppHooks | None,
) -> None:
    """Save `ref` with relation `f` holding only `ids`, without validation (PocketBase's
    `SaveNoValidate` of a reference): through `on_record_update` and its success event."""
    new = dict(ref)
    new[f.name] = ids if f.is_multiple else (ids[0] if ids else "")
    stamp = now_datetime()
    for auto in coll.fields:
        if auto.type == "autodate" and auto.opt("onUpdate"):
            new[auto.name] = stamp
    old_id = str(ref["id"])
    if hooks is None:
        _write_row(conn, coll, new, is_new=False, old_id=old_id)
        return
    event = RecordEvent(conn, schema, coll, new, RequestInfo(), original=ref)
    hooks.on_record_update.trigger(
        event, lambda e: _write_row(e.conn, e.collection, e.record, is_new=False, old_id=old_id)
    )
    _after_commit(
        hooks.on_record_after_update_success,
        RecordSuccessEvent(coll, event.record, "update", original=ref),
    )
