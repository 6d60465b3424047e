"""A small async client of Caddy's admin API (`/config/`, `/id/`, `/reverse_proxy/upstreams`).

Why not the PyPI package `caddy-api-client`: it is synchronous (`requests`), reads and
rewrites the whole config on every change (no `/id/` addressing, no `If-Match`, so two
writers lose each other's changes), and hard-codes a server name and an ACME account email.
This client is httpx against the documented endpoints, with a transport seam for tests.

Concurrency: Caddy 2.6 answers a config `GET` with an `Etag` *trailer*, `"PATH HASH"`, HASH
being the 32-bit FNV-1a of the body it sent; a change sent with `If-Match: "PATH HASH"` is
applied only if the config at PATH still hashes to HASH (else 412). httpx does not expose
trailers, so `get()` computes the same value from the body (`etag_of`; a test checks it against
the trailer of a real Caddy).

The admin endpoint is a unix socket, never TCP: Caddy's admin API has no authentication, so
whoever can connect to it can rewrite every route and TLS policy. A socket in a folder only the
control plane's user can enter (`0700`) keeps every other uid, a tenant's code among them, out
(`connect()` is refused by the kernel). On a unix socket Caddy 2.6 accepts only requests whose
`Host` header is empty (its DNS-rebinding check, `admin.origins` left unset), as its own CLI
sends them: so does this client. `admin.enforce_origin` (an `Origin` check, against
browsers) stays off: no browser can reach a unix socket.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import orjson

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


class CaddyError(Exception):
    """The admin API could not do what was asked."""


class CaddyUnavailable(CaddyError):
    """Caddy's admin endpoint did not answer (Caddy is down or restarting)."""


class CaddyRefused(CaddyError):
    """The admin API answered with an error status (`status`, Caddy's `message`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Caddy admin API: {status} {message}")
        self.status = status
        self.message = message


class Conflict(CaddyRefused):
    """412: the config changed since it was read (`If-Match` did not match)."""


def etag_of(path: str, body: bytes) -> str:
    """The `Etag` Caddy gives the config at `path` whose JSON (as Caddy sent it) is `body`."""
    value = _FNV_OFFSET
    for byte in body:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return f'"{path} {value:08x}"'


UNIX_PREFIX = "unix/"
SUN_PATH_MAX = 107  # bytes of a unix socket path (sockaddr_un.sun_path, without its NUL)


class AdminAddressError(ValueError):
    """An admin endpoint pocketfleet will not use (TCP, a relative or too long path)."""


def admin_socket(address: str) -> Path:
    """The socket path of an admin address: `unix//PATH` (Caddy's form) or `/PATH`.

    Raises `AdminAddressError` for a TCP address (`HOST:PORT`: Caddy's admin API has no
    authentication, any local process could use it), a relative path, or a path longer than
    a unix socket address holds."""
    path = address.removeprefix(UNIX_PREFIX)
    if not path.startswith("/"):
        if address.startswith(UNIX_PREFIX):
            raise AdminAddressError(f"Caddy's admin socket must be an absolute path: {address}")
        raise AdminAddressError(
            f"Caddy's admin endpoint must be a unix socket (PATH or unix//PATH), not {address!r}:"
            " a TCP admin API has no authentication, so any local process (a tenant's code"
            " too) could rewrite every route and TLS policy"
        )
    size = len(os.fsencode(path))
    if size > SUN_PATH_MAX:
        raise AdminAddressError(
            f"Caddy's admin socket path {path} is {size} bytes long; a unix socket path holds"
            f" at most {SUN_PATH_MAX}: choose a shorter one"
        )
    return Path(path)


def admin_listen(socket: Path) -> str:
    """Caddy's `admin.listen` for the socket at `socket` (an absolute path)."""
    return f"{UNIX_PREFIX}{socket}"


def open_to_others(socket: Path, *, owned: bool = True) -> str | None:
    """Why a uid other than the folder owner's and root could connect to `socket` (None if
    none could, as far as its folder shows): the folder must be closed to group and others
    (mode `0700`), and with `owned` belong to us (a Caddy we start); else to whoever runs
    Caddy (`deploy/`: the `caddy` user)."""
    folder = socket.parent
    try:
        info = folder.stat()
    except OSError as exc:
        return f"its folder {folder} cannot be checked ({exc.strerror})"
    if owned and info.st_uid != os.geteuid():
        return f"its folder {folder} belongs to uid {info.st_uid}, not to us"
    if info.st_mode & 0o077:
        return f"its folder {folder} is open to other users (mode {info.st_mode & 0o777:o})"
    return None


class CaddyAdmin:
    """Talks to the admin API on the unix socket `socket`.

    `transport` replaces the way to it (tests may give another one); by default httpx
    connects to `socket`. Every method raises `CaddyUnavailable` when Caddy does not answer,
    `Conflict` on 412 and `CaddyRefused` on any other error status. Paths are absolute
    (`/config/...`, `/id/...`).
    """

    def __init__(
        self,
        socket: Path,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.socket = socket
        self.address = admin_listen(socket)
        self._http = httpx.AsyncClient(
            base_url="http://caddy-admin",
            # Caddy accepts an empty Host on a unix socket (see the module docstring)
            headers={"Host": ""},
            timeout=httpx.Timeout(timeout_s, connect=1.0),
            transport=transport or httpx.AsyncHTTPTransport(uds=str(socket)),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self, method: str, path: str, body: object = None, if_match: str | None = None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if if_match is not None:
            headers["If-Match"] = if_match
        content = orjson.dumps(body) if body is not None else None
        try:
            response = await self._http.request(method, path, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise CaddyUnavailable(f"Caddy's admin API at {self.address}: {exc!r}") from exc
        if response.is_error:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text
            error = Conflict if response.status_code == 412 else CaddyRefused
            raise error(response.status_code, message.strip())
        return response

    async def get(self, path: str) -> tuple[Any, str]:
        """The config at `path` (parsed JSON) and its etag for `If-Match`."""
        response = await self._send("GET", path)
        return orjson.loads(response.content), etag_of(path, response.content)

    async def exists(self, path: str) -> bool:
        """Whether `path` (e.g. `/id/NAME`) exists in the running config."""
        try:
            await self._send("GET", path)
        except CaddyRefused as exc:
            if exc.status in (400, 404):
                return False
            raise
        return True

    async def post(self, path: str, body: object, if_match: str | None = None) -> None:
        """Set `path` (objects) or append to it (arrays)."""
        await self._send("POST", path, body, if_match)

    async def patch(self, path: str, body: object, if_match: str | None = None) -> None:
        """Replace the existing value at `path` (404 when absent)."""
        await self._send("PATCH", path, body, if_match)

    async def delete(self, path: str, if_match: str | None = None) -> None:
        await self._send("DELETE", path, None, if_match)

    async def upstreams(self) -> dict[str, int]:
        """Requests in flight now, by upstream dial address (`127.0.0.1:PORT`), over every
        upstream that some route of the running config references."""
        response = await self._send("GET", "/reverse_proxy/upstreams")
        return {entry["address"]: int(entry["num_requests"]) for entry in response.json() or []}

    async def stop(self) -> None:
        """Ask Caddy to exit gracefully."""
        await self._send("POST", "/stop")
