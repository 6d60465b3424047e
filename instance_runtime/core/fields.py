"""Field values: casting submitted data, validating it, and converting to/from SQLite.

Contract (per field type, as PocketBase's `PrepareValue` / `ValidateValue` / column types):

- `prepare(field, raw)` casts any submitted JSON or form value to the field's API value (e.g.
  `"5"` -> `5.0` for a number, a list for a multiple select, parsed JSON for a json field,
  a normalized `YYYY-MM-DD HH:MM:SS.sssZ` date); it never raises.
- `validate(field, value)` returns a `FieldError` with PocketBase's code, or None. Checks that
  need the database (relation ids exist, unique ids) live in the records service.
- `to_db(field, value)` is the SQLite value for a column; `from_db(field, raw)` the API value
  read back from a column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from instance_runtime.core.errors import FieldError, required
from instance_runtime.core.models import Field, format_datetime

_EMAIL_RE = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
_DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S.%f%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
_DEFAULT_JSON_MAX = 1 << 20
_DEFAULT_EDITOR_MAX = 5 << 20
_MAX_SAFE_INT = 2**53 - 1


# ---------------------------------------------------------------------------- casting
def to_str(raw: Any) -> str:
    """spf13/cast's ToString for JSON values ("" for null, lists and objects)."""
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float):
        return number_out(raw).__str__() if math.isfinite(raw) else ""
    if isinstance(raw, int | str):
        return str(raw)
    if isinstance(raw, bytes):
        return raw.decode(errors="replace")
    return ""


def to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        value = float(raw)
        return value if math.isfinite(value) else 0.0
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            return 0.0
        return value if math.isfinite(value) else 0.0
    return 0.0


def to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        return raw != 0
    if isinstance(raw, str):
        return raw.strip().lower() in ("1", "t", "true")
    return False


def to_str_list(raw: Any) -> list[str]:
    """PocketBase's `list.ToUniqueStringSlice`: JSON arrays, JSON text, or a single value."""
    if raw is None:
        return []
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                parsed = None
            raw = parsed if isinstance(parsed, list) else ([raw] if raw else [])
        else:
            raw = [raw] if raw else []
    elif not isinstance(raw, list | tuple):
        raw = [raw]
    out: list[str] = []
    for item in raw:
        text = to_str(item)
        if text and text not in out:
            out.append(text)
    return out


def parse_datetime(raw: Any) -> str:
    """A date in PocketBase's format, or "" when `raw` is not a date."""
    if isinstance(raw, datetime):
        return format_datetime(raw if raw.tzinfo else raw.replace(tzinfo=UTC))
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            return format_datetime(datetime.fromtimestamp(raw, UTC))
        except (OverflowError, OSError, ValueError):
            return ""
    text = to_str(raw).strip()
    if not text:
        return ""
    candidate = text[:-1] + "+00:00" if text.endswith("Z") else text
    for fmt in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(candidate, fmt)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return format_datetime(parsed)
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return ""
    return format_datetime(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def number_out(value: float) -> int | float:
    """A number as PocketBase serializes it: integral values without a fraction."""
    if value.is_integer() and abs(value) <= _MAX_SAFE_INT:
        return int(value)
    return value


# ---------------------------------------------------------------------------- prepare
def prepare(f: Field, raw: Any) -> Any:
    """See the module docstring."""
    t = f.type
    if t in ("text", "email", "url", "editor", "password"):
        return to_str(raw)
    if t == "number":
        return number_out(to_float(raw))
    if t == "bool":
        return to_bool(raw)
    if t in ("date", "autodate"):
        return parse_datetime(raw)
    if t in ("select", "relation", "file"):
        values = to_str_list(raw)
        if f.is_multiple:
            return values
        return values[-1] if values else ""
    if t == "json":
        return _prepare_json(raw)
    if t == "geoPoint":
        return _prepare_geo(raw)
    return raw


def _prepare_json(raw: Any) -> Any:
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def _prepare_geo(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str | bytes):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raw = {}
    if not isinstance(raw, dict):
        raw = {}
    return {
        "lon": number_out(to_float(raw.get("lon"))),
        "lat": number_out(to_float(raw.get("lat"))),
    }


def is_zero(f: Field, value: Any) -> bool:
    if f.type == "geoPoint":
        return not value or bool(value.get("lon") == 0 and value.get("lat") == 0)
    if f.type == "json":
        return value is None or value == "" or value == [] or value == {}
    if f.type == "number":
        return bool(value == 0)
    return not value


# ---------------------------------------------------------------------------- validate
def validate(f: Field, value: Any) -> FieldError | None:
    """See the module docstring (`value` is the output of `prepare`)."""
    t = f.type
    if t == "autodate":
        return None
    if t == "bool":
        return required() if f.required and not value else None
    if f.required and is_zero(f, value):
        return required()
    if t == "text":
        return _validate_text(f, value)
    if t == "number":
        return _validate_number(f, value)
    if t == "email":
        return _validate_email(f, value)
    if t == "url":
        return _validate_url(f, value)
    if t == "editor":
        limit = int(f.opt("maxSize") or 0) or _DEFAULT_EDITOR_MAX
        if len(str(value).encode()) > limit:
            return FieldError(
                "validation_content_size_limit",
                "The maximum allowed content size is {{.maxSize}} bytes",
                {"maxSize": limit},
            )
        return None
    if t == "date":
        return _validate_date(f, value)
    if t == "select":
        values = value if isinstance(value, list) else ([value] if value else [])
        max_select = max(f.max_select, 1)
        if len(values) > max_select:
            return FieldError(
                "validation_too_many_values",
                "Select no more than {{.maxSelect}}",
                {"maxSelect": max_select},
            )
        for v in values:
            if v not in (f.opt("values") or []):
                return FieldError(
                    "validation_invalid_value", "Invalid value {{.value}}", {"value": v}
                )
        return None
    if t == "relation":
        values = value if isinstance(value, list) else ([value] if value else [])
        min_select = int(f.opt("minSelect") or 0)
        if values and min_select and len(values) < min_select:
            return FieldError(
                "validation_not_enough_values",
                "Select at least {{.minSelect}}",
                {"minSelect": min_select},
            )
        max_select = max(f.max_select, 1)
        if len(values) > max_select:
            return FieldError(
                "validation_too_many_values",
                "Select no more than {{.maxSelect}}",
                {"maxSelect": max_select},
            )
        return None
    if t == "json":
        limit = int(f.opt("maxSize") or 0) or _DEFAULT_JSON_MAX
        if len(orjson.dumps(value)) > limit:
            return FieldError(
                "validation_json_size_limit",
                "The maximum allowed JSON size is {{.maxSize}} bytes",
                {"maxSize": limit},
            )
        return None
    if t == "geoPoint":
        if not -90 <= value["lat"] <= 90:
            return FieldError(
                "validation_invalid_latitude", "Latitude must be between -90 and 90 degrees."
            )
        if not -180 <= value["lon"] <= 180:
            return FieldError(
                "validation_invalid_longitude", "Longitude must be between -180 and 180 degrees."
            )
        return None
    return None


def validate_password(f: Field, plain: str) -> FieldError | None:
    """The plain password of a password field (before hashing)."""
    if f.required and not plain:
        return required()
    if not plain:
        return None
    min_len = int(f.opt("min") or 0)
    if min_len and len(plain) < min_len:
        return FieldError(
            "validation_min_text_constraint", f"Must be at least {min_len} character(s)"
        )
    max_len = int(f.opt("max") or 0) or 71
    if len(plain.encode()) > max_len:
        return FieldError(
            "validation_max_text_constraint", f"Must be less than {max_len} character(s)"
        )
    pattern = str(f.opt("pattern") or "")
    if pattern and not re.search(pattern, plain):
        return FieldError("validation_invalid_format", "Invalid value format")
    return None


def _validate_text(f: Field, value: str) -> FieldError | None:
    if f.is_primary_key and not value:
        return required()
    if not value:
        return None
    length = len(value)
    min_len = int(f.opt("min") or 0)
    if min_len and length < min_len:
        return FieldError(
            "validation_min_text_constraint",
            "Must be at least {{.min}} character(s).",
            {"min": min_len},
        )
    max_len = int(f.opt("max") or 0) or 5000
    if length > max_len:
        return FieldError(
            "validation_max_text_constraint",
            "Must be no more than {{.max}} character(s).",
            {"max": max_len},
        )
    pattern = str(f.opt("pattern") or "")
    if pattern:
        try:
            ok = re.search(pattern, value) is not None
        except re.error:
            ok = True
        if not ok:
            return FieldError("validation_invalid_format", "Invalid value format.")
    return None


def _validate_number(f: Field, value: float) -> FieldError | None:
    if f.opt("onlyInt") and not float(value).is_integer():
        return FieldError("validation_only_int_constraint", "Decimal numbers are not allowed")
    lo, hi = f.opt("min"), f.opt("max")
    if lo is not None and value < lo:
        return FieldError(
            "validation_min_number_constraint",
            "Must be greater or equal than {{.min}}",
            {"min": lo},
        )
    if hi is not None and value > hi:
        return FieldError(
            "validation_max_number_constraint",
            "Must be less or equal than {{.max}}",
            {"max": hi},
        )
    return None


def _domain_error(f: Field, domain: str, code: str, message: str) -> FieldError | None:
    only = [str(d).lower() for d in f.opt("onlyDomains") or []]
    excepted = [str(d).lower() for d in f.opt("exceptDomains") or []]
    if (only and domain.lower() not in only) or (excepted and domain.lower() in excepted):
        return FieldError(code, message)
    return None


def is_email(value: str) -> bool:
    """Whether `value` has an email's format (ozzo's `is.EmailFormat`)."""
    return len(value) <= 254 and bool(_EMAIL_RE.match(value))


def _validate_email(f: Field, value: str) -> FieldError | None:
    if not value:
        return None
    if not is_email(value):
        return FieldError("validation_is_email", "Must be a valid email address.")
    domain = value.rsplit("@", 1)[1]
    return _domain_error(
        f, domain, "validation_email_domain_not_allowed", "Email domain is not allowed"
    )


def _validate_url(f: Field, value: str) -> FieldError | None:
    if not value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc or " " in value:
        return FieldError("validation_invalid_url", "Must be a valid url")
    return _domain_error(
        f, parts.hostname or "", "validation_url_domain_not_allowed", "Url domain is not allowed"
    )


def _validate_date(f: Field, value: str) -> FieldError | None:
    if not value:
        return None
    lo, hi = parse_datetime(f.opt("min") or ""), parse_datetime(f.opt("max") or "")
    if lo and value < lo:
        return FieldError(
            "validation_min_greater_equal_than_required",
            f"Must be no less than {_go_time(lo)}.",
            {"threshold": _rfc3339(lo)},
        )
    if hi and value > hi:
        return FieldError(
            "validation_max_less_equal_than_required",
            f"Must be no greater than {_go_time(hi)}.",
            {"threshold": _rfc3339(hi)},
        )
    return None


def _go_time(value: str) -> str:
    """`2030-01-01 00:00:00.000Z` as Go's time.String(): `2030-01-01 00:00:00 +0000 UTC`."""
    base, _, frac = value.rstrip("Z").partition(".")
    frac = frac.rstrip("0")
    return f"{base}{'.' + frac if frac else ''} +0000 UTC"


def _rfc3339(value: str) -> str:
    base, _, frac = value.rstrip("Z").partition(".")
    frac = frac.rstrip("0")
    return f"{base.replace(' ', 'T')}{'.' + frac if frac else ''}Z"


# ---------------------------------------------------------------------------- storage
def to_db(f: Field, value: Any) -> Any:
    """The SQLite value of an API value."""
    t = f.type
    if f.is_multiple:
        return orjson.dumps(value if isinstance(value, list) else []).decode()
    if t == "bool":
        return 1 if value else 0
    if t == "number":
        return value
    if t == "json":
        return None if value is None else orjson.dumps(value).decode()
    if t == "geoPoint":
        return orjson.dumps(value).decode()
    return value if value is not None else ""


def _multiple_from_db(raw: Any) -> list[str]:
    if isinstance(raw, str) and raw.startswith("["):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        return [to_str(v) for v in parsed] if isinstance(parsed, list) else []
    return to_str_list(raw)


def _number_from_db(raw: Any) -> int | float:
    if type(raw) is int and -_MAX_SAFE_INT <= raw <= _MAX_SAFE_INT:
        return raw  # what number_out(to_float(raw)) gives, without the round trip
    return number_out(to_float(raw))


def _json_from_db(raw: Any) -> Any:
    if raw is None or raw == "":
        return None
    if isinstance(raw, str | bytes):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    if isinstance(raw, float):  # e.g. avg() in a view: Go writes 2.0 as 2
        return number_out(raw)
    return raw


def _text_from_db(raw: Any) -> str:
    if raw is None:
        return ""
    return raw if isinstance(raw, str) else to_str(raw)


def _single_from_db(raw: Any) -> str:
    """A single select/relation/file value (the last of a JSON array stored there)."""
    if isinstance(raw, str) and raw.startswith("["):
        values = to_str_list(raw)
        return values[-1] if values else ""
    return _text_from_db(raw)


def from_db_decoder(f: Field) -> Callable[[Any], Any]:
    """`from_db` for field `f`, as a function of the column value alone (the type dispatch
    done once: `core.record_codec` keeps one per field)."""
    if f.is_multiple:
        return _multiple_from_db
    t = f.type
    if t == "number":
        return _number_from_db
    if t == "bool":
        return to_bool
    if t == "json":
        return _json_from_db
    if t == "geoPoint":
        return _prepare_geo
    if t in ("select", "relation", "file"):
        return _single_from_db
    return _text_from_db


def from_db(f: Field, raw: Any) -> Any:
    """The API value of a column value (tolerant of data written by other tools)."""
    return from_db_decoder(f)(raw)
