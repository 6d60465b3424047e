"""Collections service: validate and save (create/update/delete/truncate/import) collections.

Contract: every function runs inside the caller's write transaction and raises `ApiError`
(400 with PocketBase's per-field codes) to refuse; the table DDL (`schema.sync_table`) runs in
the same transaction, so a refused or failing change leaves the database as it was. After a
commit the caller reloads its `Schema`.

- `create(conn, schema, data)` / `update(conn, schema, coll, data)` take PocketBase's
  collection JSON (`fields`, `indexes`, rules, `viewQuery`, auth options...). An update merges
  into the current collection (absent keys keep their value); fields are matched by id, then by
  name; system fields, system collections' names, types, rules and flags cannot change.
- `delete` refuses system collections and collections still referenced by a relation field.
- Each change defers `hooks.on_collection_after_{create,update,delete}_success` until the
  commit (`core.app.on_commit`).
"""

from __future__ import annotations

import copy
import re
import sqlite3
from typing import Any

import orjson

from instance_runtime.core import auth_options_validation, rules, thumbs
from instance_runtime.core import schema as ddl
from instance_runtime.core.app import on_commit
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.errors import ApiError, FieldError, ValidationErrors, bad_request
from instance_runtime.core.events import Action, CollectionSuccessEvent
from instance_runtime.core.field_names import field_name_error
from instance_runtime.core.models import (
    COLLECTION_TYPES,
    FIELD_TYPES,
    RULE_NAMES,
    Collection,
    Field,
    now_datetime,
)
from instance_runtime.core.schema import Schema
from instance_runtime.core.system_collections import AUTH_DEFAULTS, SYSTEM_COLLECTIONS
from instance_runtime.core.views import infer_view, sqlite_error_text
from instance_runtime.tools.dbutils import parse_index, quote
from instance_runtime.tools.security import random_string

_NAME_RE = re.compile(r"^\w+$")
_RULES_TO_CHECK = (*RULE_NAMES, "authRule", "manageRule")
_TOKEN_OPTIONS = (
    "authToken",
    "passwordResetToken",
    "emailChangeToken",
    "verificationToken",
    "fileToken",
)


def _id_field() -> Field:
    return Field.from_json(copy.deepcopy(SYSTEM_COLLECTIONS[-1]["fields"][0]))


def _auth_system_fields() -> list[Field]:
    users = next(c for c in SYSTEM_COLLECTIONS if c["name"] == "users")
    names = ("password", "tokenKey", "email", "emailVisibility", "verified")
    return [Field.from_json(copy.deepcopy(f)) for f in users["fields"] if f["name"] in names]


def _with_secrets(options: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    for key in _TOKEN_OPTIONS:
        value = dict(options.get(key) or {})
        old_secret = ((old or {}).get(key) or {}).get("secret")
        # a secret sent is taken (PocketBase's "invalidate all tokens" sends a new one)
        value["secret"] = value.get("secret") or old_secret or random_string(50)
        options[key] = value
    return options


class UnknownFieldTypeError(ApiError):
    """A field of an unknown type: PocketBase fails to even load such JSON."""

    def __init__(self, index: int, raw: dict[str, Any]) -> None:
        super().__init__(400, "Failed to load the submitted data due to invalid formatting.")
        self.raw_error = (
            f'json: cannot unmarshal JSON object into Go core.fieldWithType within "/fields/'
            f'{index}": missing or unknown field type in {orjson.dumps(raw).decode()}'
        )


def _fields_from(data: Any, old: Collection | None) -> list[Field]:
    """Fields of submitted JSON, as PocketBase's `FieldsList.add`: a field without id takes the
    id of the same-named old field, and replaces an earlier same-named field in place."""
    fields: list[Field] = []
    for raw in data if isinstance(data, list) else []:
        if not isinstance(raw, dict):
            continue
        if raw.get("type") not in FIELD_TYPES:
            raise UnknownFieldTypeError(len(fields), raw)
        f = Field.from_json(raw)
        if not raw.get("id"):
            existing = old.field(f.name) if old is not None else None
            if existing is not None:
                f.id = existing.id
            same = next((i for i, g in enumerate(fields) if g.name == f.name), None)
            if same is not None:
                f.id = fields[same].id
                fields[same] = f
                continue
        fields.append(f)
    return fields


def _ensure_system_fields(coll: Collection) -> None:
    """PocketBase's `initDefaultFields`: a missing `id` is prepended, missing auth fields are
    appended, and system defaults are enforced on the existing ones."""
    id_field = coll.field("id")
    if id_field is None:
        if coll.field_by_id(_id_field().id) is None:
            coll.fields.insert(0, _id_field())
    else:
        id_field.system = id_field.required = True
        id_field.hidden = False
        id_field.options["primaryKey"] = True
        if not id_field.options.get("pattern"):
            id_field.options["pattern"] = "^[a-z0-9]+$"
    if coll.is_auth:
        for f in _auth_system_fields():
            existing = coll.field(f.name)
            if existing is None:
                coll.fields.append(f)
            else:
                existing.system = True
                if f.name in ("password", "tokenKey"):
                    existing.hidden = True
        for column in ("tokenKey", "email"):
            if not any(_unique_on(i, column) for i in coll.indexes):
                where = " WHERE `email` != ''" if column == "email" else ""
                coll.indexes.append(
                    f"CREATE UNIQUE INDEX `idx_{column}_{coll.id}` ON `{coll.name}` "
                    f"(`{column}`){where}"
                )


def _unique_on(raw: str, column: str) -> bool:
    idx = parse_index(raw)
    return idx.unique and len(idx.columns) == 1 and idx.columns[0].name == column


def _build(data: dict[str, Any], old: Collection | None) -> Collection:
    merged: dict[str, Any] = old.to_json() if old else {}
    if old is not None:
        merged.update(old.options)
    merged.update({k: v for k, v in data.items() if k not in ("created", "updated")})
    ctype = str(merged.get("type") or "base")
    if old is None and ctype == "auth":
        for key, value in AUTH_DEFAULTS.items():
            merged.setdefault(key, copy.deepcopy(value))
    if ctype == "auth":  # option objects are merged into what is there, as Go decodes them
        base = old.options if old is not None else AUTH_DEFAULTS
        for key, value in data.items():
            if isinstance(base.get(key), dict):
                merged[key] = _merged_option(base[key], value)
    if old is None and not data.get("id"):
        merged.pop("id", None)
    coll = Collection.from_json(merged)
    coll.fields = _fields_from(merged.get("fields"), old)
    if coll.is_auth:
        coll.options = _with_secrets(coll.options, old.options if old else None)
        _shape_providers(coll.options)
    if coll.name == "_superusers":
        _superuser_options(coll.options)
    return coll


# An OAuth2 provider's members as PocketBase's `OAuth2ProviderConfig` has them (its zero values).
_PROVIDER_MEMBERS: dict[str, Any] = {
    "pkce": None,
    "name": "",
    "clientId": "",
    "clientSecret": "",
    "authURL": "",
    "tokenURL": "",
    "userInfoURL": "",
    "displayName": "",
    "extra": {},
}


def _shape_providers(options: dict[str, Any]) -> None:
    """Every `oauth2.providers` item with exactly PocketBase's members (unknown ones dropped)."""
    oauth2 = options.get("oauth2")
    if not isinstance(oauth2, dict):
        return
    shaped = []
    for item in oauth2.get("providers") or []:
        given = item if isinstance(item, dict) else {}
        provider = {
            key: copy.deepcopy(given.get(key, zero)) for key, zero in _PROVIDER_MEMBERS.items()
        }
        if provider["extra"] is None:
            provider["extra"] = {}
        shaped.append(provider)
    oauth2["providers"] = shaped


def _merged_option(base: Any, change: Any) -> Any:
    """`change` decoded into `base` as Go's `json.Unmarshal` does into a struct: objects merge
    member by member, null changes nothing, a list replaces the old one but each of its objects
    is decoded into the old item at its position (so an OAuth2 provider sent back without its
    `clientSecret`, which is never shown, keeps it), anything else replaces."""
    if change is None:
        return copy.deepcopy(base)
    if isinstance(base, dict) and isinstance(change, dict):
        out = copy.deepcopy(base)
        for key, value in change.items():
            out[key] = _merged_option(base.get(key), value)
        return out
    if isinstance(base, list) and isinstance(change, list):
        return [
            _merged_option(base[i], item)
            if i < len(base) and isinstance(base[i], dict) and isinstance(item, dict)
            else copy.deepcopy(item)
            for i, item in enumerate(change)
        ]
    return copy.deepcopy(change)


def _superuser_options(options: dict[str, Any]) -> None:
    """What PocketBase forces on `_superusers` whenever it is saved: no OAuth2, password auth
    on, and OTP only as one factor of MFA."""
    options["oauth2"] = {**(options.get("oauth2") or {}), "enabled": False, "providers": []}
    options["passwordAuth"] = {**(options.get("passwordAuth") or {}), "enabled": True}
    if (options.get("otp") or {}).get("enabled"):
        options["mfa"] = {**(options.get("mfa") or {}), "enabled": True}


def _validate(
    conn: sqlite3.Connection, schema: Schema, new: Collection, old: Collection | None
) -> ValidationErrors:
    errors: ValidationErrors = {}
    if not new.name:
        errors["name"] = FieldError("validation_required", "Cannot be blank.")
    elif len(new.name) > 255 or not _NAME_RE.match(new.name):
        errors["name"] = FieldError("validation_match_invalid", "Must be in a valid format.")
    elif "_via_" in new.name:
        errors["name"] = FieldError("validation_invalid_via", 'The value cannot contain "_via_".')
    else:
        other = schema.find(new.name)
        if other is not None and (old is None or other.id != old.id):
            errors["name"] = FieldError(
                "validation_collection_name_exists",
                "Collection name must be unique (case insensitive).",
            )
        elif (old is None or old.name.lower() != new.name.lower()) and ddl.has_table(
            conn, new.name
        ):
            errors["name"] = FieldError(
                "validation_collection_name_invalid",
                "The name shouldn't match with an existing internal table.",
            )
    if new.type not in COLLECTION_TYPES:
        errors["type"] = FieldError("validation_in_invalid", "Must be a valid value.")
    if old is not None:
        if new.type != old.type:
            errors["type"] = FieldError(
                "validation_collection_type_change", "Collection type cannot be changed."
            )
        if old.system and new.name != old.name:
            errors["name"] = FieldError(
                "validation_collection_system_name_change",
                "System collection name cannot be changed.",
            )
        if new.system != old.system:
            errors["system"] = FieldError(
                "validation_collection_system_flag_change",
                "System collection state cannot be changed.",
            )
        if old.system:
            for rule in RULE_NAMES:
                if getattr(new, rule) != getattr(old, rule):
                    errors[rule] = FieldError(
                        "validation_collection_system_rule_change",
                        "System collection API rule cannot be changed.",
                    )
    field_errors = _validate_fields(schema, new, old)
    if field_errors:
        errors["fields"] = field_errors
    for rule in _RULES_TO_CHECK:
        if rule not in errors:
            problem = rules.rule_problem(schema, new, new.rule(rule))
            if problem is not None:
                errors[rule] = FieldError(
                    "validation_invalid_rule", "Invalid rule. Raw error: " + problem
                )
    if new.is_auth:
        for key, problem in auth_options_validation.validate(schema, new).items():
            errors.setdefault(key, problem)
    if new.is_view:
        if not new.view_query.strip():
            errors["viewQuery"] = FieldError("validation_required", "Cannot be blank.")
        for rule in ("createRule", "updateRule", "deleteRule"):
            if getattr(new, rule) is not None:
                errors[rule] = FieldError("validation_nil", "Must be blank.")
        if new.indexes:
            errors["indexes"] = FieldError(
                "validation_indexes_not_supported", "View collections don't support indexes."
            )
    else:
        index_errors = _validate_indexes(new)
        if index_errors:
            errors["indexes"] = index_errors
    return errors


def _validate_fields(schema: Schema, new: Collection, old: Collection | None) -> Any:
    if not new.fields:
        return FieldError("validation_required", "Cannot be blank.")
    id_field = new.field("id")
    if id_field is None or not id_field.is_primary_key:
        return FieldError("validation_missing_primary_key", 'Missing or invalid "id" PK field.')
    if old is not None and not new.is_view:  # a view's fields follow its query
        for of in old.fields:
            if of.system:
                nf = new.field_by_id(of.id)
                if nf is None or nf.name != of.name:
                    return FieldError(
                        "validation_system_field_change",
                        "System fields cannot be deleted or renamed.",
                    )
    errs: ValidationErrors = {}
    seen_ids: set[str] = set()
    seen_names: set[str] = set()
    for i, f in enumerate(new.fields):
        key = str(i)
        if f.id in seen_ids:
            errs[key] = {
                "id": FieldError(
                    "validation_duplicated_field_id", f'Duplicated or invalid field id "{f.id}"'
                )
            }
            continue
        if f.name.lower() in seen_names:
            errs[key] = {
                "name": FieldError(
                    "validation_duplicated_field_name",
                    "Duplicated or invalid field name {{.fieldName}}",
                    {"fieldName": f.name},
                )
            }
            continue
        seen_ids.add(f.id)
        seen_names.add(f.name.lower())
        previous = old.field_by_id(f.id) if old else None
        if previous is not None and previous.type != f.type:
            errs[key] = FieldError("validation_field_type_change", "Field type cannot be changed.")
            continue
        one = _validate_field(schema, new, f, previous)
        if one:
            errs[key] = one
    return errs


def _validate_field(
    schema: Schema, coll: Collection, f: Field, old: Field | None
) -> ValidationErrors:
    errs: ValidationErrors = {}
    if f.type not in FIELD_TYPES:
        errs["type"] = FieldError("validation_invalid_type", "Invalid field type.")
        return errs
    if old is not None and old.type != f.type:
        errs["type"] = FieldError("validation_field_type_change", "Field type cannot be changed.")
    name_error = field_name_error(f.name, auth=coll.is_auth)
    if name_error is not None:
        errs["name"] = name_error
    if f.type == "select":
        values = f.opt("values") or []
        if not values:
            errs["values"] = FieldError("validation_required", "Cannot be blank.")
        elif f.max_select > len(values):
            errs["maxSelect"] = FieldError(
                "validation_max_less_equal_than_required",
                "Must be no greater than {{.threshold}}.",
                {"threshold": len(values)},
            )
    if f.type == "relation":
        target = schema.find(f.collection_id) if f.collection_id else None
        if target is None and f.collection_id != coll.id:
            errs["collectionId"] = FieldError(
                "validation_required"
                if not f.collection_id
                else "validation_field_relation_missing_collection",
                "Cannot be blank."
                if not f.collection_id
                else "The relation collection doesn't exist.",
            )
        elif old is not None and old.collection_id and old.collection_id != f.collection_id:
            errs["collectionId"] = FieldError(
                "validation_field_relation_change",
                "The relation collection cannot be changed.",
            )
    if f.type == "file":
        sizes = f.opt("thumbs") or []
        bad = {str(i): e for i, t in enumerate(sizes) if (e := thumbs.setting_error(t))}
        if bad:
            errs["thumbs"] = bad
    if f.type == "number":
        lo, hi = f.opt("min"), f.opt("max")
        if lo is not None and hi is not None and hi < lo:
            errs["max"] = FieldError(
                "validation_min_greater_equal_than_required",
                "Must be no less than {{.threshold}}.",
                {"threshold": lo},
            )
    return errs


def _validate_indexes(coll: Collection) -> ValidationErrors:
    errs: ValidationErrors = {}
    names: set[str] = set()
    for i, raw in enumerate(coll.indexes):
        idx = parse_index(raw)
        idx.table_name = "validator"
        if not idx.is_valid():
            errs[str(i)] = FieldError(
                "validation_invalid_index_expression", "Invalid CREATE INDEX expression."
            )
        elif idx.index_name.lower() in names:
            errs[str(i)] = FieldError(
                "validation_duplicated_index_name", "The index name already exists."
            )
        names.add(idx.index_name.lower())
    return errs


def _announce(hooks: AppHooks, coll: Collection, action: Action) -> None:
    hook = {
        "create": hooks.on_collection_after_create_success,
        "update": hooks.on_collection_after_update_success,
        "delete": hooks.on_collection_after_delete_success,
    }[action]
    if len(hook):
        event = CollectionSuccessEvent(coll, action)
        on_commit(lambda: hook.trigger(event, lambda _e: None))


def new_collection(ctype: str, name: str = "", collection_id: str = "") -> Collection:
    """PocketBase's `core.NewCollection`: a collection of `ctype` as a create starts from it
    (system fields, default indexes and options; a view's empty `viewQuery`), neither
    validated nor saved."""
    coll = _build({"type": ctype, "name": name, "id": collection_id}, None)
    if coll.is_view:
        coll.options.setdefault("viewQuery", "")
    else:
        _ensure_system_fields(coll)
    return coll


def create(
    conn: sqlite3.Connection, schema: Schema, data: dict[str, Any], *, hooks: AppHooks
) -> Collection:
    """See the module docstring."""
    coll = _build(data, None)
    coll.system = False
    coll.created = coll.updated = now_datetime()
    view_error = infer_view(conn, schema, coll) if coll.is_view else None
    if not coll.is_view:
        _ensure_system_fields(coll)
    errors = _validate(conn, schema, coll, None)
    if view_error is not None:
        errors["viewQuery"] = view_error
    if errors:
        raise bad_request("Failed to create collection.", errors)
    if coll.is_view:
        ddl.sync_view(conn, coll, None)
    ddl.insert_collection_row(conn, coll)
    _sync(conn, coll, None, "Failed to create collection.")
    _announce(hooks, coll, "create")
    return coll


def update(
    conn: sqlite3.Connection,
    schema: Schema,
    old: Collection,
    data: dict[str, Any],
    *,
    hooks: AppHooks,
) -> Collection:
    """See the module docstring."""
    coll = _build(data, old)
    coll.created, coll.updated = old.created, now_datetime()
    view_error = infer_view(conn, schema, coll) if coll.is_view else None
    if not coll.is_view:
        _ensure_system_fields(coll)
    errors = _validate(conn, schema, coll, old)
    if view_error is not None:
        errors["viewQuery"] = view_error
    if errors:
        raise bad_request("Failed to update collection.", errors)
    if coll.is_view:
        ddl.sync_view(conn, coll, old)
    ddl.update_collection_row(conn, coll)
    _sync(conn, coll, old, "Failed to update collection.")
    _announce(hooks, coll, "update")
    return coll


def _sync(conn: sqlite3.Connection, new: Collection, old: Collection | None, message: str) -> None:
    if new.is_view:
        return
    try:
        ddl.sync_table(conn, new, old, on_index_error=_index_error)
    except _IndexError as exc:
        raise bad_request(message, {"indexes": {str(exc.position): exc.error}}) from exc
    except sqlite3.Error as exc:
        raise bad_request(message + " Raw error: \n" + sqlite_error_text(exc)) from exc


class _IndexError(Exception):
    def __init__(self, position: int, error: FieldError) -> None:
        super().__init__(error.message)
        self.position, self.error = position, error


def _index_error(position: int, name: str, exc: sqlite3.Error) -> None:
    raise _IndexError(
        position,
        FieldError(
            "validation_invalid_index_expression",
            f"Failed to create index {name} - {sqlite_error_text(exc)}.",
        ),
    )


def delete(conn: sqlite3.Connection, schema: Schema, coll: Collection, *, hooks: AppHooks) -> None:
    """See the module docstring."""
    refs = sorted({ref.name for ref, _f in schema.referencing(coll.id) if ref.id != coll.id})
    if coll.system or refs:
        msg = "Failed to delete collection"
        if refs:
            msg += " probably due to existing reference in " + ", ".join(refs)
        raise bad_request(msg + ".")
    ddl.delete_collection_row(conn, coll)
    ddl.drop_table(conn, coll)
    for other in schema.all():
        if other.is_view and other.id != coll.id:
            try:
                conn.execute(f"SELECT * FROM {quote(other.name)} LIMIT 0")
            except sqlite3.Error as exc:
                raise bad_request("Failed to delete collection.") from exc
    _announce(hooks, coll, "delete")


def truncate(conn: sqlite3.Connection, schema: Schema, coll: Collection) -> None:
    if coll.name == "_superusers":
        raise bad_request(
            "Failed to truncate collection (most likely due to required cascade delete record "
            "references)."
        )
    if coll.is_view:
        raise ApiError(
            400,
            "View collections cannot be truncated since they don't store their own records.",
        )
    from instance_runtime.core.record_write import delete_cascade

    ids = [str(r[0]) for r in conn.execute(f"SELECT id FROM {quote(coll.name)}")]
    try:
        for rid in ids:
            delete_cascade(conn, schema, coll, rid)
    except Exception as exc:
        raise bad_request(
            "Failed to truncate collection (most likely due to required cascade delete record "
            "references)."
        ) from exc


def import_collections(
    conn: sqlite3.Connection,
    schema: Schema,
    items: list[Any],
    delete_missing: bool,
    *,
    hooks: AppHooks,
) -> None:
    """`PUT /api/collections/import`: create or update each, optionally delete the others."""
    current = schema
    for item in items:
        if not isinstance(item, dict):
            continue
        old = current.find(str(item.get("id") or "")) or current.find(str(item.get("name") or ""))
        try:
            if old is None:
                create(conn, current, item, hooks=hooks)
            else:
                update(conn, current, old, item, hooks=hooks)
        except ApiError as exc:
            raw_error = exc.raw_error if isinstance(exc, UnknownFieldTypeError) else exc.message
            raise bad_request(
                "Failed to import collections.",
                {
                    "collections": FieldError(
                        "validation_collections_import_failure",
                        "Failed to import the collections configuration. Raw error:\n" + raw_error,
                    )
                },
            ) from exc
        current = Schema.load(conn)
    if delete_missing:
        keep = {str(i.get("id") or "") for i in items if isinstance(i, dict)} | {
            str(i.get("name") or "") for i in items if isinstance(i, dict)
        }
        for coll in current.all():
            if coll.system or coll.id in keep or coll.name in keep:
                continue
            delete(conn, current, coll, hooks=hooks)
            current = Schema.load(conn)
