"""Custom-domain names and their proofs: DNS TXT (through the resolver seam) and the HTTP token
(against a real server on loopback)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from control_plane.domains.verification import (
    StaticResolver,
    Verifier,
    normalize_domain,
)
from control_plane.settings import Settings
from tests.proxy.conftest import running


class FixedDns:
    """A resolver with fixed records: the seam that keeps tests off real DNS."""

    def __init__(self, txt: dict[str, list[str]] | None = None) -> None:
        self.records = txt or {}

    async def addresses(self, host: str) -> list[str]:
        return []

    async def txt(self, name: str) -> list[str]:
        return self.records.get(name, [])


def test_domains_are_normalized() -> None:
    assert normalize_domain(" Shop.Example.COM. ") == "shop.example.com"
    assert normalize_domain("bücher.example") == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "localhost",
        "https://shop.example.com",
        "shop.example.com:8443",
        "shop.example.com/path",
        "127.0.0.1",
        "*.example.com",
        "-shop.example.com",
        "shop_1.example.com",
        "shop.123",
        "a" * 64 + ".example.com",
    ],
)
def test_what_is_not_a_domain_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_domain(value)


async def test_a_txt_record_proves_the_claim() -> None:
    dns = FixedDns({"_pocketfleet.shop.example.com": ["other", "pocketfleet-verify=tok"]})
    verifier = Verifier(dns, 9, allow_http=False)
    assert await verifier.check("shop.example.com", "tok") == ("dns", "")
    method, why = await verifier.check("shop.example.com", "another-token")
    assert method is None and "found: other, pocketfleet-verify=tok" in why


def _token_app(token: str) -> Starlette:
    async def answer(request: Request) -> Response:
        if request.headers["host"] == "shop.example.com":
            return PlainTextResponse(token)
        return PlainTextResponse("wrong host", status_code=404)

    return Starlette(routes=[Route("/.well-known/pocketfleet/{token}", answer)])


async def test_the_http_token_proves_the_domain_points_here() -> None:
    with running(_token_app("tok")) as port:
        resolver = StaticResolver({"shop.example.com": "127.0.0.1"}, FixedDns())
        verifier = Verifier(resolver, port, allow_http=True)
        assert await verifier.check("shop.example.com", "tok") == ("http", "")
        method, why = await verifier.check("shop.example.com", "not-the-token")
        assert method is None and "answered 200" in why
        assert await Verifier(resolver, port, allow_http=False).check(
            "shop.example.com", "tok"
        ) == (
            None,
            "no TXT record _pocketfleet.shop.example.com = pocketfleet-verify=tok",
        )


async def test_the_http_proof_counts_only_when_turned_on() -> None:
    # the default (PF_DOMAIN_HTTP_VERIFICATION=false): a name pointing here proves nothing
    assert Settings.model_fields["domain_http_verification"].default is False
    with running(_token_app("tok")) as port:
        resolver = StaticResolver({"shop.example.com": "127.0.0.1"}, FixedDns())
        method, why = await Verifier(resolver, port).check("shop.example.com", "tok")
    assert method is None and why.startswith("no TXT record")


async def test_a_domain_that_resolves_nowhere_is_not_verified() -> None:
    method, why = await Verifier(FixedDns(), 9, allow_http=True).check("shop.example.com", "tok")
    assert method is None and "does not resolve" in why
