"""API errors shaped as PocketBase's: `{"data": {...}, "message": "...", "status": N}`.

Contract: anything that should reach a client as an error raises `ApiError` (or a subclass);
the HTTP layer serializes `ApiError.to_json()` with `status`. `FieldError` is one validation
failure (`{code, message[, params]}`); `ValidationErrors` maps field names (or nested dicts of
them) to `FieldError`s and becomes the `data` of a 400.
"""

from __future__ import annotations

import re
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


class FieldError(Exception):
    """One validation error: a PocketBase code, a message template and optional params."""

    def __init__(self, code: str, message: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.template = message
        self.params = params or {}

    @property
    def message(self) -> str:
        text = _PLACEHOLDER.sub(lambda m: _fmt(self.params.get(m.group(1), "")), self.template)
        if text and not text.endswith("."):
            text += "."
        return text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.params:
            out["params"] = self.params
        return out


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def required() -> FieldError:
    return FieldError("validation_required", "Cannot be blank.")


ValidationErrors = dict[str, Any]  # name -> FieldError | ValidationErrors


def errors_to_json(errors: ValidationErrors) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(errors.items()):
        out[key] = value.to_json() if isinstance(value, FieldError) else errors_to_json(value)
    return out


class ApiError(Exception):
    """An error answered to the client as-is."""

    def __init__(self, status: int, message: str, data: dict[str, Any] | None = None) -> None:
        message = message.strip()
        if message and not message.endswith((".", "!", "?")):
            message += "."  # as PocketBase's NewApiError
        super().__init__(message)
        self.status = status
        self.message = message[:1].upper() + message[1:]
        self.data = data or {}

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "message": self.message, "status": self.status}


def bad_request(
    message: str = "Something went wrong while processing your request.",
    errors: ValidationErrors | None = None,
) -> ApiError:
    return ApiError(400, message, errors_to_json(errors) if errors else {})


def not_found(message: str = "The requested resource wasn't found.") -> ApiError:
    return ApiError(404, message)


def forbidden(message: str = "You are not allowed to perform this request.") -> ApiError:
    return ApiError(403, message)


def unauthorized(
    message: str = "The request requires valid record authorization token.",
) -> ApiError:
    return ApiError(401, message)


def superusers_only() -> ApiError:
    return ApiError(403, "Only superusers can perform this action.")
