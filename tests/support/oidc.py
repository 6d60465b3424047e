"""A real OpenID Connect provider on loopback for tests (tests/js/oidc_provider.mjs: panva's
``oidc-provider``), and the browser's part of an OAuth2 login done with httpx.

    with OidcProvider() as idp:
        collection_oauth2 = {"enabled": True, "providers": [idp.pocketbase_provider()]}
        ...                                             # GET .../auth-methods
        url = authorize_url(info, f"{pb}/api/oauth2-redirect")
        result = idp.authorize(url)                     # logs in, consents, stops at the redirect
        code = result.require_code(info["state"])
        ...  # POST .../auth-with-oauth2 {provider, code, codeVerifier, redirectURL}

The provider enforces by itself what the refusal tests need: a code works once (the second
exchange is ``invalid_grant``), PKCE is checked, only registered redirect URIs are served. By
default the client is a native application, so its redirect URI
``http://127.0.0.1/api/oauth2-redirect`` matches that path on any loopback port (RFC 8252), for
as many engines as a test runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx

from .ports import free_port

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCRIPT = JS_DIR / "oidc_provider.mjs"

DEFAULT_REDIRECT_URIS = ("http://127.0.0.1/api/oauth2-redirect",)
DEFAULT_CLAIMS: dict[str, Any] = {
    "sub": "oidc-user-1",
    "email": "alice@example.com",
    "email_verified": True,  # PocketBase's OIDC provider keeps the email only when verified
    "name": "Alice Example",
    "preferred_username": "alice",
}


class OidcFlowError(AssertionError):
    """The provider's pages did not lead to the client's redirect URL as expected."""


class StateMismatch(OidcFlowError):
    """The redirect carried another ``state`` than the one the login started with."""


@dataclass(frozen=True)
class AuthorizationResult:
    """Where the provider sent the browser back to: the client's redirect URL and its query."""

    redirect: str
    params: Mapping[str, str] = field(repr=False)

    @property
    def redirect_url(self) -> str:
        """The redirect URL without its query (what the token exchange must repeat)."""
        parts = urlsplit(self.redirect)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    @property
    def code(self) -> str | None:
        return self.params.get("code")

    @property
    def state(self) -> str | None:
        return self.params.get("state")

    @property
    def error(self) -> str | None:
        """``access_denied`` after a denied consent, None on success."""
        return self.params.get("error")

    @property
    def error_description(self) -> str | None:
        return self.params.get("error_description")

    def require_code(self, expected_state: str) -> str:
        """The code, after the client's own checks: the state is the one sent (StateMismatch
        otherwise, as the JS SDK's "State parameters don't match.") and there is no error."""
        if self.state != expected_state:
            raise StateMismatch(f"state {self.state!r} is not the expected {expected_state!r}")
        if self.error is not None or not self.code:
            raise OidcFlowError(f"OAuth2 redirect error or missing code: {self.error!r}")
        return self.code


def authorize_url(provider_info: Mapping[str, Any], redirect_url: str, **params: str) -> str:
    """The provider URL a browser opens, from one entry of PocketBase's ``auth-methods``
    ``oauth2.providers``: its ``authURL`` ends in an empty ``redirect_uri=`` that the client fills
    (as the JS SDK does); ``params`` replace others (the SDK's realtime flow sets ``state`` to its
    realtime client id)."""
    parts = urlsplit(str(provider_info["authURL"]))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query["redirect_uri"] = redirect_url
    query.update(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


@dataclass
class _Form:
    action: str
    method: str
    inputs: dict[str, str]


class _FormParser(HTMLParser):
    """The ``<form id=...>`` elements of a page with their named inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, _Form] = {}
        self._current: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._current = _Form(values.get("action", ""), values.get("method", "get"), {})
            self.forms[values.get("id", f"form{len(self.forms)}")] = self._current
        elif tag == "input" and self._current is not None and "name" in values:
            self._current.inputs[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def drive_authorization(
    url: str,
    *,
    issuer: str,
    login: str,
    password: str,
    consent: bool = True,
    timeout: float = 10.0,
    max_steps: int = 20,
) -> AuthorizationResult:
    """Do what a person in a browser does from ``url`` (the provider's authorize URL): follow the
    provider's redirects, sign in with ``login``/``password`` and allow (or, ``consent=False``,
    deny) on the consent page, then stop at the first redirect that leaves ``issuer``'s origin:
    the client's redirect URL, returned unvisited. A fresh cookie jar each call, as a new
    browser: every call signs in and is asked to consent."""
    origin = _origin(issuer)
    signed_in = False
    with httpx.Client(follow_redirects=False, timeout=timeout) as client:
        response = client.get(url)
        for _ in range(max_steps):
            if response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if _origin(target) != origin:
                    query = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
                    return AuthorizationResult(target, query)
                response = client.get(target)
                continue
            if response.status_code != 200:
                raise OidcFlowError(
                    f"{response.request.method} {response.url} answered "
                    f"{response.status_code}: {response.text[:800]}"
                )
            parser = _FormParser()
            parser.feed(response.text)
            forms = parser.forms
            if "login" in forms:
                if signed_in:
                    raise OidcFlowError(f"the provider refused the login {login!r}")
                signed_in = True
                chosen, data = forms["login"], {"login": login, "password": password}
            elif "consent" in forms:
                chosen, data = (forms["consent"], {}) if consent else (forms["deny"], {})
            else:
                raise OidcFlowError(f"no login or consent form at {response.url}: {response.text}")
            form_data = {**chosen.inputs, **data}
            response = client.post(urljoin(str(response.url), chosen.action), data=form_data)
    raise OidcFlowError(f"no redirect to the client after {max_steps} steps from {url}")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class OidcProvider:
    """tests/js/oidc_provider.mjs on a free loopback port while the context runs: one client
    (``client_id``/``client_secret``, ``redirect_uris``) and one user (``login``/``password``,
    ``claims``; ``picture`` defaults to the provider's own ``/avatar.png``)."""

    def __init__(
        self,
        *,
        client_id: str = "pocketfleet-test",
        client_secret: str = "pocketfleet-test-secret",
        redirect_uris: Sequence[str] = DEFAULT_REDIRECT_URIS,
        any_loopback_port: bool = True,
        login: str = "alice",
        password: str = "alice-password",
        claims: Mapping[str, Any] | None = None,
        port: int | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = tuple(redirect_uris)
        self.any_loopback_port = any_loopback_port
        self.login = login
        self.password = password
        self.port = port if port is not None else free_port()
        self.claims: dict[str, Any] = {
            **DEFAULT_CLAIMS,
            "picture": f"{self.issuer}/avatar.png",
            **(claims or {}),
        }
        self.discovery: dict[str, Any] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OidcProvider:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        """Start the provider and wait until its discovery document answers."""
        node = shutil.which("node")
        if node is None or not (JS_DIR / "node_modules" / "oidc-provider").is_dir():
            raise AssertionError("node or oidc-provider missing: run scripts/install-system.sh")
        config = {
            "port": self.port,
            "clientId": self.client_id,
            "clientSecret": self.client_secret,
            "redirectUris": list(self.redirect_uris),
            "anyLoopbackPort": self.any_loopback_port,
            "login": self.login,
            "password": self.password,
            "claims": self.claims,
        }
        self._folder = tempfile.TemporaryDirectory(prefix="pf-oidc-")
        self.log_path = Path(self._folder.name) / "oidc-provider.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [node, str(SCRIPT), json.dumps(config)],
                cwd=JS_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.discovery = self._wait_for_discovery(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_for_discovery(self, timeout: float) -> dict[str, Any]:
        url = f"{self.issuer}/.well-known/openid-configuration"
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise OidcFlowError(
                        f"oidc provider exited with {self.process.returncode}: {self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    response = client.get(url)
                    if response.status_code == 200:
                        document: dict[str, Any] = response.json()
                        return document
                if time.monotonic() > deadline:
                    raise OidcFlowError(
                        f"no discovery at {url} after {timeout}s: {self.log_tail()}"
                    )
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        folder, self._folder = self._folder, None
        if folder is not None:
            folder.cleanup()

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """What the provider logged as JSON lines (``grant.error`` etc.), oldest first."""
        if self.log_path is None or not self.log_path.exists():
            return []
        found: list[dict[str, Any]] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    event = json.loads(line)
                    if name is None or event.get("event") == name:
                        found.append(event)
        return found

    def endpoint(self, name: str) -> str:
        """An endpoint of the discovery document, e.g. ``authorization_endpoint``."""
        value = self.discovery.get(name)
        if not isinstance(value, str):
            raise KeyError(f"{name} not in the discovery document of {self.issuer}")
        return value

    def pocketbase_provider(self, name: str = "oidc", **overrides: Any) -> dict[str, Any]:
        """This provider as an entry of an auth collection's ``oauth2.providers`` for
        PocketBase's generic OIDC provider (``oidc``, ``oidc2`` or ``oidc3``)."""
        return {
            "name": name,
            "clientId": self.client_id,
            "clientSecret": self.client_secret,
            "authURL": self.endpoint("authorization_endpoint"),
            "tokenURL": self.endpoint("token_endpoint"),
            "userInfoURL": self.endpoint("userinfo_endpoint"),
            "displayName": "Test OIDC",
            "pkce": True,
            **overrides,
        }

    def authorize(self, url: str, *, consent: bool = True, **kwargs: Any) -> AuthorizationResult:
        """``drive_authorization`` as this provider's user."""
        return drive_authorization(
            url,
            issuer=self.issuer,
            login=kwargs.pop("login", self.login),
            password=kwargs.pop("password", self.password),
            consent=consent,
            **kwargs,
        )
