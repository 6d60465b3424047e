"""How CLI verbs reach a running control plane: its URL, the saved token, and errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8090"


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pocketfleet" / "credentials.json"


def save_credentials(url: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    saved = _load_saved()
    saved[url] = token
    saved["default"] = url
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(saved, handle, indent=2)
    return path


def _load_saved() -> dict[str, str]:
    try:
        data = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


def server_url() -> str:
    return (os.environ.get("PF_URL") or _load_saved().get("default") or DEFAULT_URL).rstrip("/")


def fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


class ApiClient:
    """A thin JSON client for the control plane's API; refusals become clear CLI errors."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = url or server_url()
        if token is None:  # "" means: send no token (sign-up, login)
            token = os.environ.get("PF_TOKEN") or _load_saved().get(self.url)
        self.token = token
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=120, trust_env=False)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            fail(
                f"cannot reach the control plane at {self.url} ({exc}); is `pocketfleet serve` "
                "running? Set PF_URL to point elsewhere."
            )
        if response.status_code == 401 and path != "/api/sessions":
            if "Authorization" not in response.request.headers:
                fail("not logged in: run `pocketfleet login` (or set PF_TOKEN)")
            fail("the session expired or the token was revoked: run `pocketfleet login`")
        if response.is_error:
            fail(describe_error(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def describe_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # validation errors
        detail = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
            for item in detail
        )
    return f"{response.status_code}: {detail}"
