"""An instance's custom domains as its page shows them (the `_domains.html` partial)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from control_plane.db.models import Account
from dashboard.web import cp_of


async def domain_views(request: Request, account: Account, name: str) -> list[dict[str, Any]]:
    """The instance's domains as the `_domains.html` partial shows them."""
    domains = cp_of(request).domains
    return [
        {
            "domain": row.domain,
            "verified": row.verified_at is not None,
            "verified_by": row.verified_by,
            "last_error": row.last_error,
            "publish": domains.publish(row, name),
            # custom domains are routed by Caddy only (the embedded proxy serves NAME.DOMAIN)
            "routed": cp_of(request).settings.proxy == "caddy",
        }
        for row in await domains.list_for(account, name)
    ]
