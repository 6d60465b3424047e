"""The OpenID provider side of the OAuth2 conformance scenarios: real OpenID Connect providers
on loopback (tests/support/oidc.py, one per user) and a loopback HTTP endpoint through which a
scenario, in node, has the browser's part of a login done in Python.

With ``Conformance(..., oidc=True)`` every run gets an ``OidcRelay``; node reads its
``config()`` as ``t.oidc``:

    {"url": RELAY, "users": {NAME: {"provider": {...}, "claims": {...}, "issuer": URL}}}

``provider`` is the entry of an auth collection's ``oauth2.providers`` for that user's provider
(PocketBase's generic ``oidc``; rename it ``oidc2``/``oidc3`` to use several in one
collection). ``POST RELAY/authorize`` with ``{"user", "url", "consent"?}`` opens ``url`` (the
provider's authorize URL, as built from ``auth-methods``) as a new browser would, signs in as
the user and allows (or denies) the consent, and answers where the provider sent the browser
back: ``{"redirect", "redirectURL", "params"}`` (``OidcProvider.authorize``), or 502 with
``{"error"}`` when the provider's pages did not lead back. Both engines of a run share the
providers: their redirect URLs are loopback ones, which a native client may use on any port.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.oidc import OidcFlowError, OidcProvider

# The users of the scenarios, one provider each: claims beyond tests/support/oidc.py's defaults.
USERS: dict[str, dict[str, Any]] = {
    "alice": {},  # a verified email, a name, a username and a picture
    "bob": {
        "sub": "oidc-user-bob",
        "email": "bob@example.com",
        "email_verified": False,  # PocketBase's OIDC provider drops an unverified email
        "name": "Bob Unverified",
        "preferred_username": "bob",
    },
    "carol": {
        "sub": "oidc-user-carol",
        "email": "carol@example.com",
        "email_verified": True,
        "name": "Carol Existing",
        "preferred_username": "carol",
    },
}


class OidcRelay:
    """See the module docstring."""

    def __init__(self, users: Mapping[str, Mapping[str, Any]] = USERS) -> None:
        self.providers = {
            name: OidcProvider(login=name, password=f"{name}-password", claims=claims)
            for name, claims in users.items()
        }
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/authorize":
                    return self._answer(404, {"error": f"no endpoint {self.path}"})
                length = int(self.headers.get("content-length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                    provider = relay.providers[str(request["user"])]
                    url = str(request["url"])
                except (ValueError, KeyError, TypeError) as err:
                    return self._answer(400, {"error": f"bad request: {err!r}"})
                try:
                    result = provider.authorize(url, consent=bool(request.get("consent", True)))
                except OidcFlowError as err:
                    return self._answer(502, {"error": str(err)})
                self._answer(
                    200,
                    {
                        "redirect": result.redirect,
                        "redirectURL": result.redirect_url,
                        "params": dict(result.params),
                    },
                )

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def config(self) -> dict[str, Any]:
        """What node gets as ``t.oidc`` (see the module docstring)."""
        port = self._http.server_address[1]
        return {
            "url": f"http://127.0.0.1:{port}",
            "users": {
                name: {
                    "provider": idp.pocketbase_provider(),
                    "claims": idp.claims,
                    "issuer": idp.issuer,
                }
                for name, idp in self.providers.items()
            },
        }

    @classmethod
    @contextlib.contextmanager
    def running(cls, users: Mapping[str, Mapping[str, Any]] = USERS) -> Iterator[OidcRelay]:
        relay = cls(users)
        with contextlib.ExitStack() as stack:
            for idp in relay.providers.values():
                stack.callback(idp.stop)
            with ThreadPoolExecutor(len(relay.providers)) as pool:
                for started in [pool.submit(idp.start) for idp in relay.providers.values()]:
                    started.result()
            relay._thread.start()
            stack.callback(relay._http.server_close)
            stack.callback(relay._http.shutdown)
            yield relay
