"""The table of custom domains.

`CustomDomain`: a domain an instance's owner claimed. It is `pending` until verified
(`verified_at` set), and only a verified domain is routed and gets a certificate. A domain is
claimed by at most one instance at a time (unique); a claim whose instance was deleted, or a
pending claim older than `STALE_PENDING` by another account, gives way to a new claim.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Column, Field, SQLModel

from control_plane.db.models import UTCDateTime, utcnow

STALE_PENDING = timedelta(days=7)


def _when(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class CustomDomain(SQLModel, table=True):
    __tablename__ = "custom_domain"

    id: int | None = Field(default=None, primary_key=True)
    domain: str = Field(unique=True, max_length=253)
    instance_id: str = Field(foreign_key="instance.id", index=True, max_length=15)
    token: str = Field(max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    verified_at: datetime | None = _when()
    verified_by: str = Field(default="", max_length=8)  # "dns" or "http"
    checked_at: datetime | None = _when()
    last_error: str = Field(default="", max_length=500)
