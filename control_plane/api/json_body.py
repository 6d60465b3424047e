"""Request bodies decoded as strict JSON (RFC 8259), before any model sees them.

FastAPI decodes a JSON body with the standard library, which takes what JSON does not have
(`NaN`, `Infinity`, numbers too large for a double, read as `inf`) and strings no program
downstream can take (a lone surrogate such as `"\\ud800"`, which cannot be encoded to UTF-8);
each of them then breaks whatever meets it later, the error handler that echoes the input
first. Every route of the API decodes with orjson instead (`StrictJSONRoute`), which refuses all
of these as invalid JSON, and refuses a string holding the NUL character (`"\\u0000"`, which
no C string, file name, command line or environment variable can hold) anywhere in the body,
as a key or a value. Both end as a 422 from `control_plane.api.errors`; neither the body nor
the offending value is ever echoed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


class NulInBody(json.JSONDecodeError):
    """A string of the body holds NUL. `field` says where (`vars.NAME`, `items.2`); the text
    of the body is not kept."""

    def __init__(self, field: str) -> None:
        super().__init__("a string holds the NUL character (\\u0000)", "", 0)
        self.field = field


def decode_json(body: bytes) -> Any:
    """The JSON document `body`; raises `json.JSONDecodeError` (orjson's) for anything RFC
    8259 does not allow or a double cannot hold, and `NulInBody` for a NUL in any string."""
    document = orjson.loads(body)
    where = _nul_at(document)
    if where is not None:
        raise NulInBody(".".join(where) or "body")
    return document


def _nul_at(value: Any) -> list[str] | None:
    """The path to the first string (key or value) of `value` that holds NUL, else None."""
    if isinstance(value, str):
        return [] if "\0" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\0" in key:
                return [key.replace("\0", "\\u0000")]
            inner = _nul_at(item)
            if inner is not None:
                return [key, *inner]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            inner = _nul_at(item)
            if inner is not None:
                return [str(index), *inner]
    return None


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An API route whose JSON body is decoded by `decode_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
