"""Single-use sign-in hand-offs served on an instance's own host.

The control plane cannot write into the browser storage of `NAME.domain` from the apex host,
so it leaves what the browser should store here under a random code and sends the browser to
`NAME.domain/_pf/handoff?code=CODE`. The proxy serving that host answers once with a tiny page
that writes the entries into `localStorage` and goes on to `then` (e.g. the admin UI at `/_/`).

The store knows hosts, codes and opaque strings only: what the entries mean (an engine's admin
auth) is decided by the control plane. Codes live in memory for `ttl_s` seconds: a hand-off
lost to a restart is only a link to click again.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

HANDOFF_PATH = "/_pf/handoff"
DEFAULT_TTL_S = 60.0
_MAX_PENDING = 10_000


@dataclass(frozen=True)
class Handoff:
    host: str
    storage: Mapping[str, str]
    then: str
    expires_at: float


class HandoffStore:
    """Codes issued by the control plane, each redeemable once, on its host, before expiry."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._pending: dict[str, Handoff] = {}

    def issue(self, host: str, storage: Mapping[str, str], then: str) -> str:
        """A new code for `host`; redeeming it writes `storage` and goes to path `then`."""
        now = time.monotonic()
        if len(self._pending) >= _MAX_PENDING:
            self._pending = {c: h for c, h in self._pending.items() if h.expires_at > now}
        code = secrets.token_urlsafe(32)
        self._pending[code] = Handoff(host.lower(), dict(storage), then, now + self.ttl_s)
        return code

    def redeem(self, host: str, code: str) -> Handoff | None:
        """The hand-off of `code` if it was issued for `host` and has not expired; it is
        consumed either way (a code shown to the wrong host is burnt)."""
        handoff = self._pending.pop(code, None)
        if handoff is None or handoff.host != host.lower():
            return None
        if handoff.expires_at < time.monotonic():
            return None
        return handoff


def _script_json(value: object) -> str:
    """JSON safe inside a <script> element."""
    text = orjson.dumps(value).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def handoff_page(handoff: Handoff, nonce: str) -> bytes:
    """The page that stores the entries and moves on (replacing itself in the history)."""
    entries = _script_json(dict(handoff.storage))
    then = _script_json(handoff.then)
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Signing in…</title>"
        "<p>Signing in…</p>"
        f"<script nonce={nonce}>(function(){{var e={entries};"
        "for(var k in e){localStorage.setItem(k,e[k]);}"
        f"location.replace({then});}})();</script></html>"
    ).encode()


EXPIRED_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Link expired</title>"
    b"<h1>This sign-in link has expired or was already used</h1>"
    b"<p>Open the admin again from the pocketfleet dashboard.</p></html>"
)
