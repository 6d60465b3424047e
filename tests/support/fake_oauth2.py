"""A provider's token and user-info endpoints on loopback, answering what a test sets: the
stand-in for GitHub, Discord, ... whose servers tests cannot reach. Both PocketBase and our
client are pointed at it (each provider's ``authURL``/``tokenURL``/``userInfoURL`` in the
collection config), so what PocketBase makes of an answer is what ours must make of it.

    with FakeProvider() as fake:
        fake.reply("POST", "/github/token", json={"access_token": "t", "token_type": "bearer"})
        fake.reply("GET", "/github/user", json={...})
        ... fake.url + "/github/token" ...
        fake.requests  # what was asked, in order

Every path not set answers 404 ``{}``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


class FakeProvider:
    """A threaded HTTP server on 127.0.0.1 (a free port) while the context runs."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], Reply] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with fake._lock:
                    fake.requests.append(
                        Recorded(
                            self.command,
                            parts.path,
                            parts.query,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                        )
                    )
                    reply = fake.replies.get((self.command, parts.path), Reply(404))
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        status: int = 200,
        content_type: str = "application/json",
    ) -> None:
        data = body if body is not None else _dumps(json)
        with self._lock:
            self.replies[(method, path)] = Reply(status, data, content_type)

    def requests_to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
