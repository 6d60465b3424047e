"""Reading values out of a provider's JSON the way PocketBase's Go structs do.

PocketBase 0.40 decodes user-info documents with ``encoding/json/v2`` into typed structs: member
names match case-sensitively, a missing or null member is the Go type's zero value, a member of
another JSON type fails the whole decode, and a document with a duplicated member name is
refused. This module gives the same answers for a field written ``"a.b.0.c:kind"`` (object keys
and array indexes separated by dots, ``kind`` one of ``string`` (the default), ``int`` (an
int64), ``bool``, ``any`` (the JSON value as is)).

Contract: `decode_json` / `decode_object` raise `FieldTypeError` (a ValueError) for invalid
JSON, duplicated names, or (``decode_object``) a document that is not an object;
`extract` raises `FieldTypeError` when a value on the path, or an element of an array on it,
has the wrong JSON type (every element is checked, as Go decodes the whole array).
`cast_bool` and `cast_string` are spf13/cast's ``ToBool`` and ``ToString``, `go_sprint` is
``fmt.Sprint``, for decoded JSON values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast, get_args

from .models import FieldKind, FieldSpec

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TRUE_TEXTS = frozenset({"1", "t", "T", "TRUE", "true", "True"})


class FieldTypeError(ValueError):
    """A JSON document or value that PocketBase's decoder refuses."""


def parse_field(text: str) -> FieldSpec:
    """``"data.0.id:int"`` -> FieldSpec(("data", 0, "id"), "int")."""
    path_text, _, kind = text.partition(":")
    kind = kind or "string"
    if kind not in get_args(FieldKind) or not path_text:
        raise ValueError(f"invalid field {text!r}")
    path: list[str | int] = []
    for part in path_text.split("."):
        if not part:
            raise ValueError(f"invalid field {text!r}")
        path.append(int(part) if part.isdigit() else part)
    return FieldSpec(tuple(path), cast(FieldKind, kind))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise FieldTypeError(f"duplicate object member name {key!r}")
        result[key] = value
    return result


def decode_json(data: bytes | str) -> Any:
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except FieldTypeError:
        raise
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise FieldTypeError(f"invalid JSON: {error}") from error


def decode_object(data: bytes | str) -> dict[str, Any]:
    document = decode_json(data)
    if not isinstance(document, dict):
        raise FieldTypeError(f"expected a JSON object, got {type(document).__name__}")
    return document


def zero(kind: FieldKind) -> Any:
    return {"string": "", "int": 0, "bool": False, "any": None}[kind]


def typed(value: Any, kind: FieldKind, where: str = "value") -> Any:
    """``value`` as Go's ``kind`` (its zero for None), or FieldTypeError."""
    if value is None:
        return zero(kind)
    if kind == "any":
        return value
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if (
        kind == "int"
        and isinstance(value, int)
        and not isinstance(value, bool)
        and INT64_MIN <= value <= INT64_MAX
    ):
        return value
    raise FieldTypeError(f"cannot decode JSON {type(value).__name__} {where} into Go {kind}")


def _walk(value: Any, path: tuple[str | int, ...], kind: FieldKind, where: str) -> Any:
    if value is None:
        return zero(kind)
    if not path:
        return typed(value, kind, where)
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        if not isinstance(value, list):
            raise FieldTypeError(f"{where} is not a JSON array")
        found = [_walk(item, rest, kind, f"{where}.{i}") for i, item in enumerate(value)]
        return found[head] if head < len(found) else zero(kind)
    if not isinstance(value, dict):
        raise FieldTypeError(f"{where} is not a JSON object")
    return _walk(value.get(head), rest, kind, f"{where}.{head}")


def extract(document: Mapping[str, Any], spec: FieldSpec) -> Any:
    """The value at ``spec.path`` of ``document`` as ``spec.kind``."""
    return _walk(dict(document), spec.path, spec.kind, "$")


def extract_all(document: Mapping[str, Any], specs: Mapping[str, FieldSpec]) -> dict[str, Any]:
    return {name: extract(document, spec) for name, spec in specs.items()}


def cast_bool(value: Any) -> bool:
    """spf13/cast ``ToBool``: bools as they are, numbers when non-zero, strings by
    ``strconv.ParseBool`` (anything it refuses is false), everything else false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value in TRUE_TEXTS
    return False


def go_sprint(value: Any) -> str:
    """Go's ``fmt.Sprint`` of a decoded JSON scalar (floats approximately: Go switches to
    exponent form earlier, e.g. ``1e+06``; only used for VK's token ``email``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def cast_string(value: Any) -> str:
    """spf13/cast ``ToString`` for JSON values (objects and arrays give "")."""
    if value is None or isinstance(value, dict | list):
        return ""
    return go_sprint(value)
