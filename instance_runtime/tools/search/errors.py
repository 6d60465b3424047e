"""The one error of the filter and sort language.

Contract: every malformed filter or sort (bad syntax, unknown field, unknown function, limits
exceeded, a field that the caller may not filter by) raises `FilterError`, and nothing in this
package raises anything else for bad input. The API turns it into PocketBase's generic 400
("Something went wrong while processing your request.", `data: {}`); `str(err)` is a detailed
reason meant for logs.
"""

from __future__ import annotations


class FilterError(ValueError):
    """A filter or sort expression that cannot be compiled (maps to HTTP 400)."""


def q(value: object) -> str:
    """`value` quoted as Go's `%q` does (so that messages read like PocketBase's)."""
    out = ['"']
    for ch in str(value):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
