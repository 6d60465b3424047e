"""Custom domains: claim, verify, list and remove them; and what the proxy asks about names.

- `add(account, name, domain)`: claims `domain` for the caller's instance `name`. It stays
  pending (not routed, no certificate) until verified. Refusals: not the caller's instance
  (404), not a valid domain or under `PF_DOMAIN` (422), claimed by another instance (409),
  more than `MAX_PER_INSTANCE` domains (409). Claiming again for the same instance returns
  the existing claim.
- `verify(account, name, domain)`: checks the claim (see `control_plane.domains.verification`)
  and, once it holds, routes the domain to the instance at once (`AliasSink.set_aliases`).
  A check that fails is refused (400) with what was found, also kept in `last_error`.
- `remove(account, name, domain)`: forgets the claim and stops routing it at once.
- `approve_tls(host)`: whether Caddy may get a certificate for `host`: the apex, the host of
  a live (not deleted) instance, or a verified domain of one. One indexed query.
- `token_matches(host, token)`: whether `token` is the verification token of a claim on
  `host` (the HTTP proof, served on the domain itself).
- `aliases_by_host()`: every live instance host with its verified domains (for a full push).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, Instance, utcnow
from control_plane.domains.models import STALE_PENDING, CustomDomain
from control_plane.domains.verification import (
    TXT_PREFIX,
    TXT_VALUE,
    VERIFY_PATH,
    Verifier,
    normalize_domain,
)
from control_plane.lifecycle import InstanceState
from control_plane.services.errors import BadRequest, Conflict, Invalid, NotFound
from control_plane.services.instances import InstanceService
from control_plane.settings import Settings
from proxy.hostrouting import instance_name_for_host, normalize_host

MAX_PER_INSTANCE = 20
_LIVE = col(Instance.status) != InstanceState.DELETED.value


class AliasSink(Protocol):
    """Where verified domains are routed (`proxy.caddy.sink.CaddyRoutes`)."""

    async def set_aliases(self, host: str, domains: Iterable[str]) -> None: ...


class DomainService:
    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        instances: InstanceService,
        verifier: Verifier,
        aliases: AliasSink | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.instances = instances
        self.verifier = verifier
        self.aliases = aliases

    # ----- owners

    def _checked(self, domain: str) -> str:
        try:
            domain = normalize_domain(domain)
        except ValueError as exc:
            raise Invalid(str(exc), field="domain") from exc
        apex = normalize_host(self.settings.domain)
        if domain == apex or domain.endswith("." + apex):
            raise Invalid(
                f"names under {apex} are pocketfleet's own (instances are NAME.{apex})",
                field="domain",
            )
        return domain

    async def add(self, account: Account, name: str, domain: str) -> CustomDomain:
        instance = await self.instances.get(account, name)
        domain = self._checked(domain)
        async with self.db() as session:
            row = (
                await session.exec(select(CustomDomain).where(CustomDomain.domain == domain))
            ).first()
            if row is not None and row.instance_id == instance.id:
                return row
            if row is not None:
                holder = await session.get(Instance, row.instance_id)
                stale = row.verified_at is None and utcnow() - row.created_at > STALE_PENDING
                if holder is not None and holder.status != InstanceState.DELETED and not stale:
                    raise Conflict(f"{domain} is already claimed by another instance")
                await session.delete(row)
                await session.flush()
            owned = (
                await session.exec(
                    select(CustomDomain.id).where(CustomDomain.instance_id == instance.id)
                )
            ).all()
            if len(owned) >= MAX_PER_INSTANCE:
                raise Conflict(f"an instance may have at most {MAX_PER_INSTANCE} custom domains")
            row = CustomDomain(
                domain=domain, instance_id=instance.id, token=secrets.token_urlsafe(24)
            )
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise Conflict(f"{domain} is already claimed by another instance") from exc
            return row

    async def _claim(self, account: Account, name: str, domain: str) -> tuple[Instance, str]:
        instance = await self.instances.get(account, name)
        try:
            return instance, normalize_domain(domain)
        except ValueError:
            raise NotFound(f"{name} has no custom domain {domain!r}") from None

    async def _owned(self, instance: Instance, domain: str) -> CustomDomain:
        async with self.db() as session:
            row = (
                await session.exec(
                    select(CustomDomain).where(
                        CustomDomain.domain == domain, CustomDomain.instance_id == instance.id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"{instance.name} has no custom domain {domain}")
        return row

    async def list_for(self, account: Account, name: str) -> Sequence[CustomDomain]:
        instance = await self.instances.get(account, name)
        async with self.db() as session:
            return (
                await session.exec(
                    select(CustomDomain)
                    .where(CustomDomain.instance_id == instance.id)
                    .order_by(col(CustomDomain.domain))
                )
            ).all()

    async def verify(self, account: Account, name: str, domain: str) -> CustomDomain:
        instance, domain = await self._claim(account, name, domain)
        row = await self._owned(instance, domain)
        if row.verified_at is not None:
            return row
        method, why = await self.verifier.check(domain, row.token)
        async with self.db() as session:
            fresh = await session.get(CustomDomain, row.id)
            if fresh is None:
                raise NotFound(f"{name} has no custom domain {domain}")
            fresh.checked_at = utcnow()
            fresh.last_error = why[:500]
            if method is not None:
                fresh.verified_at = utcnow()
                fresh.verified_by = method
            session.add(fresh)
            await session.commit()
        if method is None:
            raise BadRequest(f"{domain} is not verified yet: {why}", field="domain")
        await self._route(instance)
        return fresh

    async def remove(self, account: Account, name: str, domain: str) -> None:
        instance, domain = await self._claim(account, name, domain)
        row = await self._owned(instance, domain)
        async with self.db() as session:
            fresh = await session.get(CustomDomain, row.id)
            if fresh is not None:
                await session.delete(fresh)
                await session.commit()
        if row.verified_at is not None:
            await self._route(instance)

    async def _route(self, instance: Instance) -> None:
        """Tell the proxy the instance's verified domains, now."""
        if self.aliases is None or instance.name is None:
            return
        async with self.db() as session:
            domains = (
                await session.exec(
                    select(CustomDomain.domain).where(
                        CustomDomain.instance_id == instance.id,
                        col(CustomDomain.verified_at).is_not(None),
                    )
                )
            ).all()
        await self.aliases.set_aliases(self.settings.instance_host(instance.name), domains)

    def publish(self, row: CustomDomain, instance_name: str) -> dict[str, dict[str, str]]:
        """What the owner publishes: where the domain points, and one of the two proofs."""
        target = self.settings.instance_host(instance_name)
        proofs: dict[str, dict[str, str]] = {
            "route": {"type": "CNAME", "name": row.domain, "value": target},
            "dns": {"type": "TXT", "name": TXT_PREFIX + row.domain, "value": TXT_VALUE + row.token},
        }
        if self.verifier.allow_http:
            proofs["http"] = {
                "url": f"http://{row.domain}{VERIFY_PATH}{row.token}",
                "body": row.token,
            }
        return proofs

    # ----- the proxy's questions

    async def approve_tls(self, host: str) -> bool:
        host = normalize_host(host)
        if host == normalize_host(self.settings.domain):
            return True
        name = instance_name_for_host(host, self.settings.domain)
        async with self.db() as session:
            if name is not None:
                query = select(Instance.id).where(Instance.name == name, _LIVE)
            else:
                query = (
                    select(Instance.id)
                    .join(CustomDomain, col(CustomDomain.instance_id) == col(Instance.id))
                    .where(
                        CustomDomain.domain == host,
                        col(CustomDomain.verified_at).is_not(None),
                        _LIVE,
                    )
                )
            return (await session.exec(query)).first() is not None

    async def token_matches(self, host: str, token: str) -> bool:
        async with self.db() as session:
            row = (
                await session.exec(
                    select(CustomDomain.token).where(CustomDomain.domain == normalize_host(host))
                )
            ).first()
        return row is not None and secrets.compare_digest(row, token)

    async def aliases_by_host(self) -> dict[str, list[str]]:
        async with self.db() as session:
            rows = (
                await session.exec(
                    select(Instance.name, CustomDomain.domain)
                    .join(CustomDomain, col(CustomDomain.instance_id) == col(Instance.id))
                    .where(col(CustomDomain.verified_at).is_not(None), _LIVE)
                )
            ).all()
        hosts: dict[str, list[str]] = {}
        for name, domain in rows:
            if name is not None:
                hosts.setdefault(self.settings.instance_host(name), []).append(domain)
        return hosts
