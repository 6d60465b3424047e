"""The errors a Python hook raises to answer a request with PocketBase's error JSON.

Contract: each class is an `ApiError` (`core.errors`), so the runtime answers it as it is:
`{"data": {...}, "message": "...", "status": N}`. The defaults are PocketBase's
(`tools/router/error.go`): `BadRequestError` 400 "Something went wrong while processing your
request.", `NotFoundError` 404 "The requested resource wasn't found.", `ForbiddenError` 403
"You are not allowed to perform this request.", `UnauthorizedError` 401 "Missing or invalid
authentication.", `TooManyRequestsError` 429 "Too Many Requests.", `InternalServerError` 500
"Something went wrong while processing your request."; `ApiError(status, message, data)` any
other.

`data` is made safe as PocketBase's `safeErrorsData` makes it: a `ValidationError` becomes
`{"code", "message"[, "params"]}` (its message sentenized: first letter upper-case, a final
period), a nested mapping is made safe in turn, anything else becomes
`{"code": "validation_invalid_value", "message": "Invalid value."}` (so no internal detail
leaks through an error's data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from instance_runtime.core.errors import ApiError as _CoreApiError
from instance_runtime.core.errors import FieldError

GENERIC_MESSAGE = "Something went wrong while processing your request."

ErrorData = Mapping[str, Any]


class ValidationError(FieldError):
    """One field's error in an error's `data`: `ValidationError("too_short", "Too short")`."""

    def __init__(self, code: str, message: str, params: dict[str, Any] | None = None) -> None:
        text = message.strip()
        super().__init__(code, text[:1].upper() + text[1:], params)


def _sentenize(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def safe_error_data(data: ErrorData | None) -> dict[str, Any]:
    """See the module docstring."""
    out: dict[str, Any] = {}
    for name, value in (data or {}).items():
        if isinstance(value, Mapping):
            out[str(name)] = safe_error_data(value)
        elif isinstance(value, FieldError):
            item: dict[str, Any] = {"code": value.code, "message": _sentenize(value.message)}
            if value.params:
                item["params"] = dict(value.params)
            out[str(name)] = item
        else:
            out[str(name)] = {"code": "validation_invalid_value", "message": "Invalid value."}
    return out


class ApiError(_CoreApiError):
    """An error answered with `status`, `message` and (made safe) `data`."""

    def __init__(self, status: int, message: str = "", data: ErrorData | None = None) -> None:
        super().__init__(status, message or _status_text(status), safe_error_data(data))


class BadRequestError(ApiError):
    def __init__(self, message: str = "", data: ErrorData | None = None) -> None:
        super().__init__(400, message or GENERIC_MESSAGE, data)


class NotFoundError(ApiError):
    def __init__(self, message: str = "", data: ErrorData | None = None) -> None:
        super().__init__(404, message or "The requested resource wasn't found.", data)


class ForbiddenError(ApiError):
    def __init__(self, message: str = "", data: ErrorData | None = None) -> None:
        super().__init__(403, message or "You are not allowed to perform this request.", data)


class UnauthorizedError(ApiError):
    def __init__(self, message: str = "", data: ErrorData | None = None) -> None:
        super().__init__(401, message or "Missing or invalid authentication.", data)


class TooManyRequestsError(ApiError):
    def __init__(self, message: str = "", data: ErrorData | None = None) -> None:
        super().__init__(429, message or "Too Many Requests.", data)


class InternalServerError(ApiError):
    def __init__(self, message: str = "", data: ErrorData | None = None) -> None:
        super().__init__(500, message or GENERIC_MESSAGE, data)


def _status_text(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


__all__ = [
    "GENERIC_MESSAGE",
    "ApiError",
    "BadRequestError",
    "ForbiddenError",
    "InternalServerError",
    "NotFoundError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "ValidationError",
    "safe_error_data",
]
