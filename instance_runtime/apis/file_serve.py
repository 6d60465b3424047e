"""Serving one stored object over HTTP as Go's `http.ServeContent` does (PocketBase's
`filesystem.Serve` ends in it), streamed from a `Storage` chunk by chunk.

Contract: `StorageResponse(storage, key, info, content_type, headers)` answers a GET or HEAD
for the object `key` whose `FileInfo` is `info`, with the given headers plus
`Accept-Ranges: bytes`, `Content-Length` and `Last-Modified` (from `info.modified`, no ETag):

- preconditions: `If-Match` other than `*` (no ETag is served) or `If-Unmodified-Since` older
  than the object is 412; `If-None-Match: *` or
  `If-Modified-Since` not older than the object (to the second) is 304 without body headers;
- `Range: bytes=...` (honoured unless `If-Range` names another date or any entity tag): one
  range is a 206 with `Content-Range`; several are a 206 `multipart/byteranges` (Go's part
  layout); ranges that add up to more than the object are ignored (200); a syntax error or
  no overlapping range is 416 (`Content-Range: bytes */SIZE` for the latter) with Go's
  plain-text message, except that an empty object ignores a non-overlapping range;
- the body is read from `storage.open(key, start, end)` in a worker thread, `READ` bytes at a
  time, one reader per range, and the reader is closed when the client goes away.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from instance_runtime.tools.filesystem import FileInfo, Reader, Storage

READ = 1 << 18
_NO_OVERLAP = "invalid range: failed to overlap"
_INVALID = "invalid range"


class _BadRange(Exception):
    def __init__(self, message: str, no_overlap: bool = False) -> None:
        super().__init__(message)
        self.no_overlap = no_overlap


def parse_range(header: str, size: int) -> list[tuple[int, int]]:
    """Go's `parseRange`: `(start, length)` pairs, or `_BadRange`."""
    if not header:
        return []
    if not header.startswith("bytes="):
        raise _BadRange(_INVALID)
    ranges: list[tuple[int, int]] = []
    no_overlap = False
    for part in header[len("bytes=") :].split(","):
        part = part.strip(" \t")
        if not part:
            continue
        first, sep, last = part.partition("-")
        if not sep:
            raise _BadRange(_INVALID)
        first, last = first.strip(" \t"), last.strip(" \t")
        if not first:
            if not last.isdigit():
                raise _BadRange(_INVALID)
            n = min(int(last), size)
            ranges.append((size - n, n))
            continue
        if not first.isdigit():
            raise _BadRange(_INVALID)
        start = int(first)
        if start >= size:
            no_overlap = True
            continue
        if not last:
            ranges.append((start, size - start))
            continue
        if not last.isdigit() or start > int(last):
            raise _BadRange(_INVALID)
        end = min(int(last), size - 1)
        ranges.append((start, end - start + 1))
    if no_overlap and not ranges:
        raise _BadRange(_NO_OVERLAP, no_overlap=True)
    return ranges


def _http_date(raw: str) -> datetime | None:
    try:
        value = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


class StorageResponse(Response):
    """See the module docstring."""

    def __init__(
        self,
        storage: Storage,
        key: str,
        info: FileInfo,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.storage = storage
        self.key = key
        self.info = info
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.headers["content-type"] = content_type  # as given: no charset added
        self.content_type = content_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Headers(scope=scope)
        method = str(scope.get("method", "GET")).upper()
        size = self.info.size
        modified = self.info.modified
        self.headers["last-modified"] = format_datetime(modified.astimezone(UTC), usegmt=True)

        if "if-match" in request:  # no entity tag is served, so only `*` can match
            if request["if-match"].strip() != "*":
                return await self._bare(send, 412)
        else:
            since = _http_date(request.get("if-unmodified-since", ""))
            if since is not None and _seconds(modified) > _seconds(since):
                return await self._bare(send, 412)
        if request.get("if-none-match", "").strip() == "*":
            return await self._not_modified(send)
        if "if-none-match" not in request and method in ("GET", "HEAD"):
            ims = _http_date(request.get("if-modified-since", ""))
            if ims is not None and _seconds(modified) <= _seconds(ims):
                return await self._not_modified(send)

        range_header = request.get("range", "")
        if_range = request.get("if-range", "")
        if range_header and if_range and method in ("GET", "HEAD"):
            moment = None if if_range.lstrip().startswith(('"', "W/")) else _http_date(if_range)
            if moment is None or _seconds(moment) != _seconds(modified):
                range_header = ""
        try:
            ranges = parse_range(range_header, size)
        except _BadRange as exc:
            if not (exc.no_overlap and size == 0):
                extra = {"content-range": f"bytes */{size}"} if exc.no_overlap else {}
                return await self._error(send, 416, str(exc), extra)
            ranges = []
        if sum(length for _, length in ranges) > size:
            ranges = []

        headers = MutableHeaders(raw=list(self.raw_headers))
        headers["accept-ranges"] = "bytes"
        status = 200
        boundary = ""
        if len(ranges) == 1:
            start, length = ranges[0]
            status = 206
            headers["content-range"] = f"bytes {start}-{start + length - 1}/{size}"
            send_size = length
        elif ranges:
            status = 206
            boundary = secrets.token_hex(30)
            headers["content-type"] = f"multipart/byteranges; boundary={boundary}"
            send_size = sum(len(self._part_head(boundary, i, r, size)) + r[1] for i, r in
                            enumerate(ranges)) + len(self._closing(boundary))  # fmt: skip
        else:
            send_size = size
        headers["content-length"] = str(send_size)
        await send({"type": "http.response.start", "status": status, "headers": headers.raw})
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                if not ranges:
                    await self._copy(send, 0, size)
                elif len(ranges) == 1:
                    await self._copy(send, ranges[0][0], ranges[0][1])
                else:
                    for i, part in enumerate(ranges):
                        head = self._part_head(boundary, i, part, size)
                        await send({"type": "http.response.body", "body": head, "more_body": True})
                        await self._copy(send, part[0], part[1], last=False)
                    closing = self._closing(boundary)
                    await send({"type": "http.response.body", "body": closing, "more_body": False})
                group.cancel_scope.cancel()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(stream)
            group.start_soon(watch)

    def _part_head(self, boundary: str, index: int, part: tuple[int, int], size: int) -> bytes:
        start, length = part
        lead = "" if index == 0 else "\r\n"
        return (
            f"{lead}--{boundary}\r\nContent-Range: bytes {start}-{start + length - 1}/{size}\r\n"
            f"Content-Type: {self.content_type}\r\n\r\n"
        ).encode("latin-1")

    @staticmethod
    def _closing(boundary: str) -> bytes:
        return f"\r\n--{boundary}--\r\n".encode("latin-1")

    async def _copy(self, send: Send, start: int, length: int, last: bool = True) -> None:
        if length <= 0:
            if last:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        reader: Reader = await anyio.to_thread.run_sync(
            self.storage.open, self.key, start, start + length
        )
        try:
            remaining = length
            while remaining > 0:
                chunk = await anyio.to_thread.run_sync(reader.read, min(READ, remaining))
                if not chunk:
                    raise RuntimeError(f"stored file {self.key} is shorter than expected")
                remaining -= len(chunk)
                more = remaining > 0 or not last
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(reader.close)

    async def _bare(self, send: Send, status: int) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _not_modified(self, send: Send) -> None:
        headers = MutableHeaders(raw=list(self.raw_headers))
        for name in ("content-type", "content-length", "content-encoding"):
            if name in headers:
                del headers[name]
        await send({"type": "http.response.start", "status": 304, "headers": headers.raw})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _error(self, send: Send, status: int, message: str, extra: dict[str, str]) -> None:
        headers = MutableHeaders(raw=list(self.raw_headers))
        for name in ("last-modified", "cache-control", "content-encoding"):
            if name in headers:
                del headers[name]
        headers["content-type"] = "text/plain; charset=utf-8"  # (nosniff: the pipeline's)
        body = (message + "\n").encode()
        headers["content-length"] = str(len(body))
        for name, value in extra.items():
            headers[name] = value
        await send({"type": "http.response.start", "status": status, "headers": headers.raw})
        await send({"type": "http.response.body", "body": body, "more_body": False})
