"""Shapes of the custom-domain API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class DomainCreate(BaseModel):
    domain: str = Field(
        max_length=300,
        examples=["shop.example.com"],
        description=(
            "a host name of two or more labels (letters, digits and inner hyphens; IDNA "
            "allowed), at most 253 characters once encoded, no wildcard, scheme, port or path "
            "and not an IP address"
        ),
        # the shape, documented here; `verification.normalize_domain` checks the rest
        json_schema_extra={
            "pattern": r"^\s*([^\s./:@*]+\.)+[^\s./:@*]*[^\s./:@*0-9][^\s./:@*]*\.*\s*$"
        },
    )


class DomainPublic(BaseModel):
    domain: str
    instance: str
    status: Literal["pending", "verified"]
    created: datetime
    verified: datetime | None
    verified_by: str = Field(description="dns or http, once verified")
    checked: datetime | None = Field(description="when the last verification ran")
    last_error: str = Field(description="what the last failed verification found")
    publish: dict[str, dict[str, str]] = Field(
        description="route: point the domain here (CNAME); dns: a TXT record that proves "
        "it is yours; http (if enabled): a URL pocketfleet answers itself once the domain "
        "points here. Publish `route` and one proof, then verify."
    )
