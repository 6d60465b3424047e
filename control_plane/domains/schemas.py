"""Shapes of the custom-domain API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class DomainCreate(BaseModel):
    domain: str = Field(max_length=300, examples=["shop.example.com"])


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
