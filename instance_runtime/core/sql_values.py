"""SQLite values as PocketBase's SQL console answers them: every value a string (or null), as
Go's `database/sql` scans a column into a `*string` from PocketBase's SQLite driver.

Contract (`console_value(value, decltype)`):

- NULL is None; an integer its decimal digits; a real Go's `strconv.FormatFloat(v, 'g', -1,
  64)` (shortest digits, an exponent from 1e+06 up and below 1e-04: `1e+08`, `1.5`, `1e-05`);
  text as it is; a blob its bytes as text.
- Text read from a column declared `DATE`, `DATETIME` or `TIMESTAMP` that reads as a date-time
  of SQLite's formats (`YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.fff]]`, a `T` instead of the space,
  an optional `Z`, a `+hh:mm` offset after seconds) comes back in Go's RFC 3339 form with
  nanoseconds (`2024-01-01T10:00:00Z`, `2024-01-01T10:00:00.123+02:00`), as the driver turns it
  into a time first; any other text stays as it is.
- `go_text(raw)` decodes UTF-8 bytes as Go's JSON encoder shows them: each byte of an invalid
  sequence becomes U+FFFD (it serves as a connection's `text_factory`, and for blobs).
"""

from __future__ import annotations

import calendar
import codecs
import math
import re
from decimal import Decimal

_REPLACE = "pf-go-utf8"


def _replace_one_byte(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "\ufffd", error.start + 1


codecs.register_error(_REPLACE, _replace_one_byte)


def go_text(raw: bytes) -> str:
    """See the module docstring."""
    return raw.decode("utf-8", _REPLACE)


def go_float(value: float) -> str:
    """Go's `strconv.FormatFloat(value, 'g', -1, 64)`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(d) for d in digit_tuple)
    point = len(digits) + exponent  # where the decimal point falls among the digits
    prefix = "-" if sign else ""
    exp = point - 1
    if exp < -4 or exp >= 6:  # shortest 'g' decides with a precision of 6
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


_TIME_TYPES = frozenset({"DATE", "DATETIME", "TIMESTAMP"})
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?([+-]\d{2}:\d{2})?)?)?"
)


def _rfc3339(text: str) -> str | None:
    """`text` as the driver's time in Go's RFC 3339 with nanoseconds, or None."""
    match = _DATETIME.fullmatch(text.removesuffix("Z"))
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset is not None and second is None:
        return None
    y, mo, d = int(year), int(month), int(day)
    h, mi, s = int(hour or 0), int(minute or 0), int(second or 0)
    if not 1 <= mo <= 12 or not 1 <= d <= calendar.monthrange(y, mo)[1]:
        return None
    if h > 23 or mi > 59 or s > 59:
        return None
    nanos = (fraction or "")[:9].ljust(9, "0").rstrip("0")
    zone = "Z" if offset in (None, "+00:00", "-00:00") else offset
    frac = f".{nanos}" if nanos else ""
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"


def console_value(value: object, decltype: str = "") -> str | None:
    """See the module docstring."""
    if value is None:
        return None
    if isinstance(value, bool):  # not produced by SQLite; kept apart from int for clarity
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return go_text(bytes(value))
    text = str(value)
    if decltype.upper() in _TIME_TYPES:
        converted = _rfc3339(text)
        if converted is not None:
            return converted
    return text
