"""Checking that a custom domain belongs to whoever claimed it, and where names resolve.

Two proofs:

- `dns`: a TXT record `_pocketfleet.DOMAIN` whose value is `pocketfleet-verify=TOKEN`: the
  claimant controls the domain's DNS zone. Always accepted.
- `http`: `GET http://DOMAIN/.well-known/pocketfleet/TOKEN` answers TOKEN. pocketfleet serves
  that path itself (Caddy sends it to the control plane, `DomainService.token_matches`), so
  this proves that the domain's DNS points at this server, not who set that up: any tenant
  could claim a name that already points here (a dangling record, another tenant's CNAME).
  Accepted only when the operator turns it on (`PF_DOMAIN_HTTP_VERIFICATION=true`;
  `allow_http`).

The `Resolver` is the seam for DNS: `SystemResolver` asks the system's resolver (addresses)
and DNS servers (TXT, via dnspython); `StaticResolver` answers fixed addresses for some names
(`PF_DOMAIN_RESOLVE`, for tests and private networks) and defers to another for the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx

VERIFY_PATH = "/.well-known/pocketfleet/"
TXT_PREFIX = "_pocketfleet."
TXT_VALUE = "pocketfleet-verify="
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_ADDRESSES = 3


def normalize_domain(value: str) -> str:
    """The domain as stored and matched: lowercase ASCII (IDNA), no final dot. Raises
    `ValueError` saying what is wrong for anything that is not a plain host name with at
    least two labels (URLs, IP addresses, wildcards, ports, bad labels)."""
    text = value.strip().lower().rstrip(".")
    if not text:
        raise ValueError("give a domain name, e.g. shop.example.com")
    if "/" in text or ":" in text or "@" in text:
        raise ValueError("give a bare domain name (no scheme, port or path)")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        raise ValueError("give a domain name, not an IP address")
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{value!r} is not a valid domain name") from exc
    labels = text.split(".")
    if len(text) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            f"{value!r} is not a valid domain name (two or more labels of letters, digits and "
            "inner hyphens; no wildcards)"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} has a numeric top-level label")
    return text


class Resolver(Protocol):
    """Name resolution for verification. Both methods answer [] when the name has none."""

    async def addresses(self, host: str) -> list[str]: ...

    async def txt(self, name: str) -> list[str]: ...


class SystemResolver:
    async def addresses(self, host: str) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def txt(self, name: str) -> list[str]:
        try:
            answer = await dns.asyncresolver.resolve(name, "TXT", lifetime=5.0)
        except (dns.exception.DNSException, dns.resolver.NoNameservers):
            return []
        return [b"".join(r.strings).decode(errors="replace") for r in answer]


class StaticResolver:
    """Fixed addresses for the names in `addresses`; everything else from `fallback`."""

    def __init__(self, addresses: Mapping[str, str], fallback: Resolver) -> None:
        self._addresses = {name.lower().rstrip("."): ip for name, ip in addresses.items()}
        self._fallback = fallback

    async def addresses(self, host: str) -> list[str]:
        fixed = self._addresses.get(host.lower())
        return [fixed] if fixed is not None else await self._fallback.addresses(host)

    async def txt(self, name: str) -> list[str]:
        return await self._fallback.txt(name)


class Verifier:
    """Checks a claim (`check`); HTTP goes to port `http_port` of the domain's addresses."""

    def __init__(
        self,
        resolver: Resolver,
        http_port: int,
        *,
        allow_http: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.resolver = resolver
        self.http_port = http_port
        self.allow_http = allow_http
        self._transport = transport

    async def check(self, domain: str, token: str) -> tuple[str | None, str]:
        """`(method, "")` for the first proof that holds (`dns`, then `http`), else
        `(None, why)` with what was found, for the owner to fix."""
        records = await self.resolver.txt(TXT_PREFIX + domain)
        if TXT_VALUE + token in records:
            return "dns", ""
        why = [
            f"no TXT record {TXT_PREFIX}{domain} = {TXT_VALUE}{token}"
            + (f" (found: {', '.join(records)[:120]})" if records else "")
        ]
        if self.allow_http:
            ok, problem = await self._http(domain, token)
            if ok:
                return "http", ""
            why.append(problem)
        return None, "; ".join(why)

    async def _http(self, domain: str, token: str) -> tuple[bool, str]:
        addresses = await self.resolver.addresses(domain)
        if not addresses:
            return False, f"{domain} does not resolve to an address"
        problems = []
        async with httpx.AsyncClient(
            timeout=5.0, transport=self._transport, trust_env=False, follow_redirects=False
        ) as client:
            for address in addresses[:_MAX_ADDRESSES]:
                host = f"[{address}]" if ":" in address else address
                url = f"http://{host}:{self.http_port}{VERIFY_PATH}{token}"
                try:
                    response = await client.get(url, headers={"Host": domain})
                except httpx.HTTPError as exc:
                    problems.append(f"{address}: {type(exc).__name__}")
                    continue
                if response.status_code == 200 and response.text.strip() == token:
                    return True, ""
                problems.append(f"{address} answered {response.status_code}")
        return False, (
            f"http://{domain}{VERIFY_PATH}{token} did not answer the token "
            f"({'; '.join(problems)}): does {domain} point at this server?"
        )
