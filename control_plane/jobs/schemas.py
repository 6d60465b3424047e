"""Shapes of the scheduled-jobs API, and the checks of what a job may send.

What a job sends is checked here, field by field (each refusal a 422 naming the field, never
repeating the value): the method one of `METHODS`; the path an origin-form path (`/...`, with
an optional query) of visible ASCII, no host, no fragment; headers with token names, values
of visible ASCII, spaces and tabs, and none of the hop-by-hop headers nor those the platform or
the proxy set (`REFUSED_HEADERS`); a body of at most `MAX_BODY_BYTES` in UTF-8; a timeout of 1
to 300 s.
The schedule (which depends on the settings) and the combinations (no body on GET or HEAD) are
checked by the service.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
MAX_PATH = 2048
MAX_BODY_BYTES = 64 * 1024
MAX_HEADERS = 30
MAX_HEADER_NAME = 100
MAX_HEADER_VALUE = 4096
TIMEOUT_MIN_S, TIMEOUT_MAX_S, TIMEOUT_DEFAULT_S = 1, 300, 30
MASK = "••••••••"

# hop-by-hop headers (RFC 9110 section 7.6.1) and those the platform or the proxy set
REFUSED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
    }
)
_PATH = re.compile(r"/(?!/)[!$-\[\]-~]*")  # visible ASCII without `"`, `#`, `\`
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")  # visible ASCII, spaces and tabs

SCHEDULE_HELP = (
    "a 5-field crontab in UTC (`*/15 * * * *`), `@hourly`, `@daily`, `@weekly`, `@monthly`, "
    "`@yearly`, or `@every 30s` / `@every 5m` / `@every 1h30m`"
)


def check_method(method: str) -> str:
    upper = method.upper()
    if upper not in METHODS:
        raise ValueError(f"the method must be one of {', '.join(METHODS)}")
    return upper


def check_path(path: str) -> str:
    if len(path) > MAX_PATH:
        raise ValueError(f"the path has at most {MAX_PATH} characters")
    if not _PATH.fullmatch(path):
        raise ValueError(
            "the path must start with a single / and hold visible ASCII only (no host, no "
            "spaces, no #fragment; percent-encode the rest), e.g. /api/hello?x=1"
        )
    return path


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if len(name) > MAX_HEADER_NAME or not _TOKEN.fullmatch(name):
            raise ValueError("a header name is a token of letters, digits and !#$%&'*+.^_`|~-")
        if lower in REFUSED_HEADERS or lower.startswith("proxy-"):
            raise ValueError(
                "hop-by-hop headers, Host, Content-Length, Expect and the forwarding headers "
                "are set by the platform, not by a job"
            )
        if lower in seen:
            raise ValueError("a header is given twice (names are case-insensitive)")
        seen.add(lower)
        if len(value) > MAX_HEADER_VALUE or not _FIELD_VALUE.fullmatch(value):
            raise ValueError(
                f"a header value has at most {MAX_HEADER_VALUE} characters of visible ASCII, "
                "spaces and tabs (no line breaks)"
            )
    return headers


def check_body(body: str | None) -> str | None:
    if body is None:
        return None
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("the body is not valid Unicode text") from None
    if size > MAX_BODY_BYTES:
        raise ValueError(f"the body has at most {MAX_BODY_BYTES // 1024} KB in UTF-8")
    return body


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: str = Field(max_length=100, description=SCHEDULE_HELP, examples=["@every 5m"])
    method: Method = Field("GET", description="the HTTP method (case-insensitive)")
    path: str = Field(
        max_length=MAX_PATH,
        description="the instance's route, with an optional query: /api/hello?x=1",
        examples=["/api/hello"],
    )
    body: str | None = Field(
        None,
        max_length=MAX_BODY_BYTES,
        description="sent as is (not with GET or HEAD), at most 64 KB in UTF-8; "
        "Content-Type defaults to application/json",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_HEADERS,
        description="sent with every run; values are sealed at rest and not shown again",
    )
    timeout_s: int = Field(
        TIMEOUT_DEFAULT_S,
        ge=TIMEOUT_MIN_S,
        le=TIMEOUT_MAX_S,
        description="seconds one attempt may take (a wake included)",
    )
    paused: bool = False

    _method = field_validator("method", mode="before")(
        lambda value: check_method(value) if isinstance(value, str) else value
    )
    _path = field_validator("path")(check_path)
    _headers = field_validator("headers")(check_headers)
    _body = field_validator("body")(check_body)


class JobUpdate(BaseModel):
    """What a PATCH changes (fields left out stay); `headers` replaces all of them, `body`
    null removes it."""

    model_config = ConfigDict(extra="forbid")

    schedule: str | None = Field(None, max_length=100, description=SCHEDULE_HELP)
    method: Method | None = None
    path: str | None = Field(None, max_length=MAX_PATH)
    body: str | None = Field(None, max_length=MAX_BODY_BYTES)
    headers: dict[str, str] | None = Field(None, max_length=MAX_HEADERS)
    timeout_s: int | None = Field(None, ge=TIMEOUT_MIN_S, le=TIMEOUT_MAX_S)
    paused: bool | None = None

    _method = field_validator("method", mode="before")(
        lambda value: check_method(value) if isinstance(value, str) else value
    )
    _path = field_validator("path")(lambda value: None if value is None else check_path(value))
    _headers = field_validator("headers")(
        lambda value: None if value is None else check_headers(value)
    )
    _body = field_validator("body")(check_body)


class JobRunPublic(BaseModel):
    id: int
    job_id: str
    started: datetime
    status: str = Field(
        description="the HTTP status of the last attempt (`200`, `404`, ...), `error` (no "
        "answer: refused, reset, not started) or `timeout`"
    )
    http_status: int | None = Field(description="the HTTP status as a number, if any")
    duration_ms: int = Field(description="from the first attempt's start to the last's end")
    attempts: int = Field(description="attempts made (5xx and timeouts are tried again)")
    response: str = Field(description="the first 4 KB of the answer's body")
    error: str = Field(description="what went wrong, for `error` and `timeout`")


class JobPublic(BaseModel):
    id: str
    instance: str
    schedule: str = Field(description=SCHEDULE_HELP)
    method: str
    path: str
    headers: dict[str, str] = Field(description=f"the header names; values show as {MASK}")
    body_bytes: int | None = Field(description="size of the body in UTF-8 (null: none)")
    timeout_s: int
    paused: bool
    next_run: datetime | None = Field(description="when it runs next (null: paused)")
    created: datetime
    updated: datetime
    last_run: datetime | None
    last_status: str | None
