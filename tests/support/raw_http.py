"""HTTP/1.1 written by hand over a socket, for what httpx will not send: a `Content-Length`
without its body, a chunked body cut short, a body that stalls, a request without `Host`.

response = exchange(port, b"GET / HTTP/1.0\r\n\r\n")
response.status, response.headers["content-type"], response.json()
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lowercased names; the last value of a repeated header
    body: bytes
    closed: bool  # the server closed the connection after it (only read when asked to wait)

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    port: int, *parts: bytes, wait_for_close: bool = False, timeout: float = 60.0
) -> RawResponse:
    """Send `parts` in order on a new connection to 127.0.0.1:`port`, then read one response
    (its body by `Content-Length`); with `wait_for_close`, then wait for the server to close
    the connection (`closed` is False if it sends anything else or `timeout` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for part in parts:
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"the connection closed before a response: {data!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        closed = False
        if wait_for_close:
            try:
                closed = sock.recv(1) == b""
            except TimeoutError:
                closed = False
            except ConnectionResetError:
                closed = True
        return RawResponse(int(status_line.split()[1]), headers, body[:length], closed)


def request_head(method: str, path: str, host: str | None, *headers: str) -> bytes:
    """The request line and headers of an HTTP/1.1 request (no `Host` when `host` is None)."""
    lines = [f"{method} {path} HTTP/1.1", *([f"Host: {host}"] if host is not None else [])]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
