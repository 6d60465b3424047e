"""`/api/oauth2-redirect` without HTTP: where an OAuth2 provider sends the browser back, and
how its `state` and `code` reach the realtime client that started the login (PocketBase's
`apis/record_auth_with_oauth2_redirect.go`).

Contract:

- `RedirectData` is what the provider sent (`state`, `code`, `error`, Apple's `user`);
  `message()` is the `@oauth2` realtime message `{state, code[, error]}`.
- `deliver_redirect(app, data, client_ip)` -> True when the redirect reached its realtime
  client and carried a code (PocketBase's success page), False for its failure page (no state,
  no such client, an error or no code: the client is still told of an error).
- The seam for the realtime broker (issue 16): `set_redirect_receiver(app, receiver)`.
  `receiver.deliver(client_id, client_ip, message)` sends `message` as the `@oauth2` event to
  the realtime client `client_id` and unsubscribes it from `@oauth2`; it returns False when
  there is no such client, it is discarded or not subscribed to `@oauth2`, or it connected from
  another address than `client_ip` (when it recorded one; it is unsubscribed then too).
  Without a receiver every redirect gets the failure page, as PocketBase answers a state that
  is no realtime client's id.
- Apple sends the user's name only with its first redirect (`form_post`, the `user` JSON): it
  is kept a minute for the login with that code, `pop_apple_name(app, code)` takes it once.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from instance_runtime.core.app import App

log = logging.getLogger("instance_runtime")

APPLE_NAME_TTL = 60.0
MAX_APPLE_NAME_KEY = 1000
MAX_APPLE_NAME_BYTES = 150
_APPLE_NAME_PREFIX = "@redirect_name_"


@dataclass(frozen=True)
class RedirectData:
    """What the provider sent to `/api/oauth2-redirect` (query, or a `form_post` body)."""

    state: str = ""
    code: str = ""
    error: str = ""
    apple_user: str = ""

    def message(self) -> dict[str, str]:
        """The `@oauth2` realtime message (PocketBase's JSON: `error` only when set)."""
        out = {"state": self.state, "code": self.code}
        if self.error:
            out["error"] = self.error
        return out


class RedirectReceiver(Protocol):
    """The realtime broker's side of `/api/oauth2-redirect` (see the module docstring)."""

    def deliver(self, client_id: str, client_ip: str, message: Mapping[str, str]) -> bool: ...


@dataclass
class _AppState:
    receiver: RedirectReceiver | None = None
    apple_names: dict[str, tuple[float, str]] = field(default_factory=dict)


_states: weakref.WeakKeyDictionary[App, _AppState] = weakref.WeakKeyDictionary()


def _state(app: App) -> _AppState:
    state = _states.get(app)
    if state is None:
        state = _states[app] = _AppState()
    return state


def set_redirect_receiver(app: App, receiver: RedirectReceiver | None) -> None:
    """See the module docstring (None removes it)."""
    _state(app).receiver = receiver


def deliver_redirect(app: App, data: RedirectData, client_ip: str) -> bool:
    """See the module docstring."""
    if not data.state:
        log.debug("Missing OAuth2 state parameter")
        return False
    state = _state(app)
    receiver = state.receiver
    if receiver is None:
        log.debug("Missing or invalid OAuth2 subscription client %r (no realtime)", data.state)
        return False
    key = ""
    if data.apple_user and not data.error and data.code:
        key = _store_apple_name(state, data.code, data.apple_user)
    if not receiver.deliver(data.state, client_ip, data.message()):
        log.debug("Missing or invalid OAuth2 subscription client %r", data.state)
        if key:
            state.apple_names.pop(key, None)
        return False
    if data.error or not data.code:
        log.debug("Failed OAuth2 redirect due to an error or missing code parameter")
        return False
    return True


def _store_apple_name(state: _AppState, code: str, serialized: str) -> str:
    """Keep the name of Apple's `user` JSON for a minute; the key, "" when nothing was kept."""
    key = _APPLE_NAME_PREFIX + code
    if len(key) > MAX_APPLE_NAME_KEY:
        return ""
    try:
        parsed = orjson.loads(serialized)
        name = (parsed.get("name") or {}) if isinstance(parsed, dict) else None
        if not isinstance(name, dict):
            return ""
        first, last = name.get("firstName") or "", name.get("lastName") or ""
        if not isinstance(first, str) or not isinstance(last, str):
            return ""
    except orjson.JSONDecodeError:
        log.debug("Failed to parse Apple's redirect name data")
        return ""
    full = f"{first} {last}".encode()[:MAX_APPLE_NAME_BYTES].decode("utf-8", "ignore").strip()
    if not full:
        return ""
    now = time.monotonic()
    for stale in [k for k, (expires, _) in state.apple_names.items() if expires <= now]:
        del state.apple_names[stale]
    state.apple_names[key] = (now + APPLE_NAME_TTL, full)
    return key


def pop_apple_name(app: App, code: str) -> str | None:
    """The Apple user name a redirect with `code` carried (once), None when there is none."""
    found = _state(app).apple_names.pop(_APPLE_NAME_PREFIX + code, None)
    if found is None or found[0] <= time.monotonic():
        return None
    return found[1]
