"""Downloads from URLs that a third party chose (an OAuth2 user's avatar), refusing to connect
to this machine or its private networks: PocketBase's ``safeHTTPClient``/``safeFileFromURL``.

PocketBase checks the address of every connection, after name resolution, so a name that
resolves to a loopback, unspecified, private (RFC 1918, fc00::/7), link-local or multicast
address is refused, and so is a redirect to one (no DNS rebinding either: the checked address
is the one connected to). Environment proxies are not used.

Contract: `safe_fetch(url, max_bytes)` returns the body of a GET answered 200..399 (after up to
10 redirects), cut at ``max_bytes`` as PocketBase's ``io.LimitReader`` does (``truncated``
says so), with ``name`` = Go's ``path.Base(url)``. It raises `DisallowedAddressError` when
every address of a host is refused and `SafeFetchError` for any other failure (status,
network, timeout). `is_public_address` is the address rule; tests pass another one as
``address_allowed`` to download from loopback. PocketBase uses this client for the avatar
only: the token and user-info requests of a login go to any address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_MAX_BYTES = 32 << 20  # PocketBase's DefaultMaxBodySize
DEFAULT_TIMEOUT = 10.0
MAX_REDIRECTS = 10

_PRIVATE = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_LINK_LOCAL_MULTICAST_V4 = ipaddress.ip_network("224.0.0.0/24")


class SafeFetchError(Exception):
    """The download failed (status, network, timeout)."""


class DisallowedAddressError(SafeFetchError):
    """The URL's host is, or resolves only to, a refused address."""


def is_public_address(address: IPAddress) -> bool:
    """Go's checks in PocketBase's ``safeHTTPClient``: not loopback, unspecified, private,
    link-local (unicast or multicast) or multicast. An IPv4-mapped IPv6 address is judged as
    its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified or address.is_link_local:
        return False
    if address.is_multicast or address in _LINK_LOCAL_MULTICAST_V4:
        return False
    return not any(address in net for net in _PRIVATE if net.version == address.version)


class _RefusedAddress(httpcore.ConnectError):
    """Raised by the guarded backend; httpx reports it as the cause of its ConnectError."""


def _join_host_port(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself and connects only to allowed addresses, trying each in turn
    (as Go's dialer does when its ``Control`` refuses one)."""

    def __init__(self, address_allowed: Callable[[IPAddress], bool]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allowed = address_allowed

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as error:
            raise httpcore.ConnectError(f"lookup {host}: {error}") from error
        last: Exception | None = None
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if not self._allowed(address):
                last = _RefusedAddress(
                    f"address {_join_host_port(address, port)!r} is invalid or resolve to "
                    "disallowed IP"
                )
                continue
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error
        if last is None:
            last = httpcore.ConnectError(f"no address for {host}")
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise _RefusedAddress(f"unix socket {path!r} is not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class SafeTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections go through the address guard."""

    def __init__(
        self,
        *,
        address_allowed: Callable[[IPAddress], bool] = is_public_address,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        super().__init__(verify=verify, trust_env=False)
        # httpx 0.28 takes no network backend, so its pool is replaced by an equal one that
        # has the guarded backend (the test of a refused loopback URL proves it is used)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            network_backend=_GuardedBackend(address_allowed),
        )


@dataclass(frozen=True)
class SafeDownload:
    content: bytes
    name: str
    content_type: str
    truncated: bool = False


def go_path_base(path: str) -> str:
    """Go's ``path.Base``: the last slash-separated element ("." for "", "/" for slashes)."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    return stripped.rsplit("/", 1)[-1]


async def safe_fetch(
    url: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    address_allowed: Callable[[IPAddress], bool] = is_public_address,
    verify: ssl.SSLContext | bool = True,
) -> SafeDownload:
    transport = SafeTransport(address_allowed=address_allowed, verify=verify)
    client = httpx.AsyncClient(
        transport=transport,
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        timeout=timeout,
        trust_env=False,
    )
    try:
        async with client, asyncio.timeout(timeout), client.stream("GET", url) as response:
            if not 200 <= response.status_code <= 399:
                raise SafeFetchError(f"failed to download url {url} ({response.status_code})")
            chunks: list[bytes] = []
            size = 0
            truncated = False
            async for chunk in response.aiter_bytes():
                if size + len(chunk) > max_bytes:
                    chunks.append(chunk[: max_bytes - size])
                    truncated = True
                    break
                chunks.append(chunk)
                size += len(chunk)
            return SafeDownload(
                content=b"".join(chunks),
                name=go_path_base(url),
                content_type=response.headers.get("content-type", ""),
                truncated=truncated,
            )
    except httpx.ConnectError as error:
        if isinstance(error.__cause__, _RefusedAddress):
            raise DisallowedAddressError(str(error)) from error
        raise SafeFetchError(f"GET {url}: {error}") from error
    except (httpx.HTTPError, TimeoutError, httpx.InvalidURL) as error:
        raise SafeFetchError(f"GET {url}: {error or type(error).__name__}") from error
