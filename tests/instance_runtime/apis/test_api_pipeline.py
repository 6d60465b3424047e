"""The request pipeline of a real runtime process: CORS and security headers as PocketBase
sends them, superuser IP allow-lists, rate limits keyed by the client behind trusted proxies.
(Settings and rate-limit answers are compared with PocketBase in the conformance suite.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess

ALLOWED_IP = "10.9.9.9"  # the superuser's address in the allow-list test


@pytest.fixture
def settings(runtime: RuntimeProcess) -> Iterator[httpx.Client]:
    """The superuser's client; the settings a test changed are put back after it."""
    su = runtime.client(superuser=True)
    before = su.get("/api/settings").json()
    yield su
    restore = {k: before[k] for k in ("superuserIPs", "rateLimits", "trustedProxy")}
    put_back = su.patch("/api/settings", json=restore, headers={"X-Forwarded-For": ALLOWED_IP})
    assert put_back.status_code == 200, put_back.text


def test_a_preflight_is_answered_204_with_pocketbase_cors_headers(runtime: RuntimeProcess) -> None:
    response = httpx.options(
        f"{runtime.url}/api/collections/x/records",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "GET,HEAD,PUT,PATCH,POST,DELETE"
    assert response.headers["access-control-allow-headers"] == "authorization,content-type"
    assert response.headers.get_list("vary") == [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ]


def test_every_answer_carries_the_security_headers_and_cors_for_an_origin(
    runtime: RuntimeProcess,
) -> None:
    for path in ("/api/health", "/api/collections/missing/records"):
        response = httpx.get(f"{runtime.url}{path}", headers={"Origin": "https://a.example"})
        assert response.headers["x-xss-protection"] == "1; mode=block"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "SAMEORIGIN"
        assert response.headers["cross-origin-opener-policy"] == "same-origin"
        assert response.headers["access-control-allow-origin"] == "*"
    plain = httpx.get(f"{runtime.url}/api/health")
    assert "access-control-allow-origin" not in plain.headers
    assert plain.headers["vary"] == "Origin"


def test_a_superuser_outside_the_allowed_addresses_is_refused(
    runtime: RuntimeProcess, settings: httpx.Client
) -> None:
    change = {"superuserIPs": ["10.9.9.0/24"], "trustedProxy": {"headers": ["X-Forwarded-For"]}}
    assert settings.patch("/api/settings", json=change).status_code == 200
    refused = settings.get("/api/collections")
    assert refused.status_code == 403
    assert refused.json() == {
        "data": {},
        "message": "You are not allowed to perform this request.",
        "status": 403,
    }
    allowed = settings.get("/api/collections", headers={"X-Forwarded-For": ALLOWED_IP})
    assert allowed.status_code == 200
    assert httpx.get(f"{runtime.url}/api/health").status_code == 200, "guests are not affected"


def test_the_rate_limit_counts_each_client_behind_a_trusted_proxy(
    runtime: RuntimeProcess, settings: httpx.Client
) -> None:
    change: dict[str, Any] = {
        "trustedProxy": {"headers": ["X-Forwarded-For"], "useLeftmostIP": False},
        "rateLimits": {
            "enabled": True,
            "rules": [{"label": "GET /api/health", "maxRequests": 1, "duration": 600}],
        },
    }
    assert settings.patch("/api/settings", json=change).status_code == 200

    def health(client_ip: str) -> int:
        headers = {"X-Forwarded-For": f"203.0.113.200, {client_ip}"}
        return httpx.get(f"{runtime.url}/api/health", headers=headers).status_code

    assert [health("198.51.100.1"), health("198.51.100.2")] == [200, 200]
    assert health("198.51.100.1") == 429
    refused = httpx.get(
        f"{runtime.url}/api/health", headers={"X-Forwarded-For": "198.51.100.2"}
    ).json()
    assert refused == {"data": {}, "message": "Too Many Requests.", "status": 429}
    assert settings.get("/api/settings").status_code == 200, "superusers are never limited"
