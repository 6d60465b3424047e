"""Every refusal of the API as HTTP: its status and one JSON body, `ErrorPublic`.

`{"status": 422, "code": "invalid", "detail": "name: must be 3 to 40 characters long",
"field": "name", "errors": [{"field": "name", "message": "...", "code": "string_too_short"}]}`

- `detail` says what went wrong and what to fix, for people; `code` is stable, for programs;
  `field` names the input at fault when there is one; `errors` lists every input at fault (a
  422 from validation names each).
- A refusal never echoes the body, nor a value it has not checked (it may be large, a secret,
  or not encodable at all); a message may name what the caller chose once it is known to be
  short and plain (a name that is taken, a version that is not installed).
- Services raise `ServiceError`s; request validation (FastAPI's), unknown routes and methods
  (Starlette's) and the ASGI middlewares' own refusals (`error_body`) take the same shape.
  Anything else is a 500 with the same shape and nothing of the error in it; the server's log
  gets its traceback (Python's, which holds no local values).

`error_responses` documents the shape in the OpenAPI document for the statuses a route gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane.api.json_body import NulInBody
from control_plane.schemas import ErrorPublic, FieldProblem
from control_plane.services.errors import ServiceError, TooManyRequests, Unauthorized

MESSAGE_MAX = 300  # characters of one problem's message (pydantic's never need more)
PROBLEMS_MAX = 20  # problems listed in one refusal

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    422: "invalid",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
}


def code_of(status: int) -> str:
    return _STATUS_CODES.get(status, "error")


def error_body(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    field: str | None = None,
    errors: Sequence[FieldProblem] = (),
) -> bytes:
    """The JSON bytes of an `ErrorPublic` (for the pure-ASGI middlewares, which answer before
    FastAPI does)."""
    error = ErrorPublic(
        status=status, code=code or code_of(status), detail=detail, field=field, errors=errors
    )
    return orjson.dumps(error.model_dump(exclude_none=True))


def error_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    field: str | None = None,
    errors: Sequence[FieldProblem] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(status, detail, code=code, field=field, errors=errors),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def field_of(location: Iterable[Any]) -> str:
    """A validation error's location as a field name: `("body", "vars", "X")` is `vars.X`,
    `("query", "tail")` is `tail`, `("body",)` (the body as a whole) is `body`."""
    parts = [str(part) for part in location]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:] or (["body"] if parts[0] == "body" else [parts[0]])
    return ".".join(parts) or "body"


def _message(text: str) -> str:
    text = text.removeprefix("Value error, ")
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


def validation_problems(exc: RequestValidationError) -> list[FieldProblem]:
    """One `FieldProblem` per error, none holding the input (pydantic's `input` and `ctx` are
    dropped; its messages name constraints, never values)."""
    cause = exc.__cause__
    if isinstance(cause, NulInBody):
        return [FieldProblem(field=cause.field, message=cause.msg, code="nul_character")]
    problems: list[FieldProblem] = []
    for error in exc.errors()[:PROBLEMS_MAX]:
        kind = str(error.get("type", "invalid"))
        if kind == "json_invalid":
            reason = str((error.get("ctx") or {}).get("error", "")).split(":", 1)[0]
            message = "the body is not valid JSON" + (f" ({reason})" if reason else "")
            problems.append(FieldProblem(field="body", message=_message(message), code=kind))
            continue
        problems.append(
            FieldProblem(
                field=field_of(error.get("loc", ())),
                message=_message(str(error.get("msg", "invalid"))),
                code=kind,
            )
        )
    return problems


def _summary(problems: Sequence[FieldProblem]) -> str:
    return "; ".join(
        problem.message if problem.field == "body" else f"{problem.field}: {problem.message}"
        for problem in problems
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError) -> Response:
        headers: dict[str, str] = {}
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        problems = (
            [FieldProblem(field=exc.field, message=exc.message, code=exc.code)] if exc.field else []
        )
        return error_response(
            exc.status,
            exc.message,
            code=exc.code,
            field=exc.field,
            errors=problems,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        problems = validation_problems(exc)
        return error_response(
            422,
            _summary(problems) or "the request is invalid",
            field=problems[0].field if problems else None,
            errors=problems,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "the request is refused"
        return error_response(exc.status_code, _message(detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        # Starlette raises `exc` again once this is sent: the server logs its traceback
        return error_response(500, "internal error: the operator's log has the details")


DESCRIPTIONS: dict[int, str] = {
    400: "Bad request: the request cannot be taken as it is (see `detail`)",
    401: "Not signed in: send `Authorization: Bearer TOKEN`",
    403: "Forbidden: the caller may not do this",
    404: "Not found (or not the caller's)",
    408: "The request body stalled",
    409: "Conflict with the current state (see `detail`)",
    413: "The request body is larger than the server takes",
    421: "Misdirected: this server does not answer for the request's `Host`",
    422: "Invalid input: `errors` names each field at fault and why",
    429: "Too many attempts: wait `Retry-After` seconds",
    502: "A part behind the control plane failed (see `detail`)",
    503: "Not available now (see `detail`)",
    507: "Insufficient storage: the disk quota or a limit on files is reached (see `detail`)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route that may refuse with `statuses`."""
    return {
        status: {"model": ErrorPublic, "description": DESCRIPTIONS[status]} for status in statuses
    }
