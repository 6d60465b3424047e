"""A dashboard user without a browser, for HTTP-level dashboard tests.

person = WebPerson(server, "fay@example.com")   # signs up: `api` (bearer) and `web` (cookie)
person.page("/instances/NAME")                  # GET, asserting the status (200 by default)
person.post("/instances/NAME/jobs", {...})      # a form POST with the CSRF token of a page
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from .server import ServeProcess, sign_up

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class WebPerson:
    """A logged-in browser without a browser: the session cookie, and each form's CSRF token
    read from a page (`csrf_page`, the instances list unless told)."""

    def __init__(self, server: ServeProcess, email: str, csrf_page: str = "/instances") -> None:
        self.api = server.client()
        token = sign_up(self.api, email)
        self.api.headers["Authorization"] = f"Bearer {token}"
        self.web = server.client(follow_redirects=True)
        self.web.cookies.set("pf_session", token)
        self.csrf_page = csrf_page

    def page(self, url: str, status: int = 200) -> httpx.Response:
        response = self.web.get(url)
        assert response.status_code == status, response.text
        return response

    def post(self, url: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        token = _CSRF.search(self.page(self.csrf_page).text)
        assert token
        return self.web.post(url, data={"csrf_token": token.group(1), **(data or {})}, **kwargs)

    def close(self) -> None:
        self.api.close()
        self.web.close()
