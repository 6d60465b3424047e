"""Custom domains of an instance, the TLS `ask` endpoint Caddy calls before getting a
certificate, and the HTTP verification token served on a claimed domain."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse

from control_plane.api.deps import CP, CurrentAccount
from control_plane.api.errors import error_response, error_responses
from control_plane.api.routing import api_router
from control_plane.domains.models import CustomDomain
from control_plane.domains.schemas import DomainCreate, DomainPublic
from control_plane.domains.service import DomainService
from control_plane.domains.verification import VERIFY_PATH

router = api_router("domains", 401, 403, 404)


def domain_public(domains: DomainService, row: CustomDomain, name: str) -> DomainPublic:
    return DomainPublic(
        domain=row.domain,
        instance=name,
        status="verified" if row.verified_at is not None else "pending",
        created=row.created_at,
        verified=row.verified_at,
        verified_by=row.verified_by,
        checked=row.checked_at,
        last_error=row.last_error,
        publish=domains.publish(row, name),
    )


@router.post(
    "/api/instances/{name}/domains",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409),
)
async def add_domain(
    cp: CP, account: CurrentAccount, name: str, data: DomainCreate
) -> DomainPublic:
    """Claim a domain for the instance; it is served once verified."""
    return domain_public(cp.domains, await cp.domains.add(account, name, data.domain), name)


@router.get("/api/instances/{name}/domains")
async def list_domains(cp: CP, account: CurrentAccount, name: str) -> list[DomainPublic]:
    return [
        domain_public(cp.domains, row, name) for row in await cp.domains.list_for(account, name)
    ]


@router.post("/api/instances/{name}/domains/{domain}/verify")
async def verify_domain(cp: CP, account: CurrentAccount, name: str, domain: str) -> DomainPublic:
    """Check the published proof; once it holds, the domain is routed (400 says what is
    missing otherwise)."""
    return domain_public(cp.domains, await cp.domains.verify(account, name, domain), name)


@router.delete("/api/instances/{name}/domains/{domain}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_domain(cp: CP, account: CurrentAccount, name: str, domain: str) -> Response:
    """Stop serving the domain now and forget the claim."""
    await cp.domains.remove(account, name, domain)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/tls/ask", include_in_schema=False)
async def tls_ask(cp: CP, domain: Annotated[str, Query(max_length=300)]) -> Response:
    """Caddy's on-demand TLS question: 200 if a certificate for `domain` may be obtained
    (the apex, a live instance's host, a verified custom domain), else 404."""
    if await cp.domains.approve_tls(domain):
        return JSONResponse({"ok": True})
    return error_response(404, f"{domain} is not served here")


@router.get(VERIFY_PATH + "{token}", include_in_schema=False)
async def verification_token(cp: CP, request: Request, token: str) -> PlainTextResponse:
    """The HTTP proof of a claim, answered on the claimed domain itself."""
    host = request.headers.get("host", "")
    if len(token) <= 64 and await cp.domains.token_matches(host, token):
        return PlainTextResponse(token, headers={"Cache-Control": "no-store"})
    return PlainTextResponse("not found", status_code=404)
