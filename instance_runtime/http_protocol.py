"""uvicorn's httptools protocol, with each response's writes coalesced into one send.

Contract: `HttpProtocol` is uvicorn's `HttpToolsProtocol` (pass it as `uvicorn.Config(http=...)`)
whose connection writes what it is given in one step of the event loop with a single
`transport.write` at the end of that step: uvicorn writes a response's status line and headers,
then its body, as two system calls (two TCP segments on loopback), which the profile of a
short API answer showed as a fifth of the event loop's time. Bytes and their order are the
same; writes are never held past the current step, nor beyond `FLUSH_AT` bytes (a larger write
goes out at once, with what was held before it), so uvicorn's flow control still sees a full
socket buffer. Closing the connection sends what is held first; aborting drops it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FLUSH_AT = 64 << 10


class CoalescingTransport:
    """Wraps a connection's transport (see the module docstring); anything else is the
    wrapped transport's."""

    __slots__ = ("_held", "_loop", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._size + len(data) >= FLUSH_AT:
            self._held.append(bytes(data))
            self.flush()
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._size += len(data)

    def flush(self) -> None:
        """Send what is held now."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._size = 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """See the module docstring."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)
