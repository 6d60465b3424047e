"""What PocketBase accepts as the name of a collection field (`DefaultFieldNameValidationRule`,
plus the names auth collections reserve).

Contract: `field_name_error(name, auth=False)` is the first rule `name` breaks, as the API words
it (blank, longer than 100, not `^\\w+$`, one of `RESERVED_NAMES`, containing `_via_`, or, for
an auth collection, `passwordConfirm`/`oldPassword`), or None. `go_error_text(error)` is how
PocketBase's Go error of that rule reads inside a raw message (the validation library's own
messages are lower case without a final period; PocketBase's are as written).
"""

from __future__ import annotations

import re

from instance_runtime.core.errors import FieldError

RESERVED_NAMES = frozenset(
    {"null", "true", "false", "_rowid_", "collectionId", "collectionName", "expand"}
)
_NAME = re.compile(r"^\w+$")
_LIBRARY_CODES = frozenset(
    {
        "validation_required",
        "validation_length_out_of_range",
        "validation_match_invalid",
        "validation_not_in_invalid",
    }
)


def field_name_error(name: str, *, auth: bool = False) -> FieldError | None:
    """See the module docstring."""
    if not name:
        return FieldError("validation_required", "Cannot be blank.")
    if len(name) > 100:
        return FieldError(
            "validation_length_out_of_range",
            "The length must be between {{.min}} and {{.max}}.",
            {"max": 100, "min": 1},
        )
    if not _NAME.match(name):
        return FieldError("validation_match_invalid", "Must be in a valid format.")
    if name in RESERVED_NAMES:
        return FieldError("validation_not_in_invalid", "Must not be in list.")
    if "_via_" in name.lower():
        return FieldError("validation_found_via", 'The value cannot contain "_via_".')
    if auth and name in ("passwordConfirm", "oldPassword"):
        return FieldError(
            "validation_reserved_field_name", "The field name is reserved and cannot be used."
        )
    return None


def go_error_text(error: FieldError) -> str:
    """See the module docstring."""
    text = error.message
    if error.code in _LIBRARY_CODES and text:
        text = text[0].lower() + text[1:].removesuffix(".")
    return text
