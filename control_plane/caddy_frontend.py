"""Caddy in front of the instances (`PF_PROXY=caddy`): built from the settings, opened and
closed with the control plane.

`CaddyFrontend` assembles `proxy.caddy`: the route sink (fed together with the embedded
route table through `sink`, since the embedded proxy still serves what Caddy sends to the
control plane: wakes and sign-in hand-offs), the activity feed, and with `PF_START_CADDY`
the supervised Caddy child. `open()` must run before the reconciler's first full push:
it binds the access-log socket (whose address goes into Caddy's config) and loads the
verified custom domains.

Caddy's admin API is reached on a unix socket only (`PF_CADDY_ADMIN`, by default
`PF_DATA_DIR/caddy/admin.sock`): a TCP address is refused (`AdminAddressError`), since Caddy's
admin API has no authentication and every local uid, a tenant's code included, could use it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from control_plane.settings import Settings
from proxy.activity import ActivityTracker
from proxy.caddy.activity import CaddyActivity
from proxy.caddy.admin import CaddyAdmin, admin_socket, open_to_others
from proxy.caddy.config import CaddyLayout
from proxy.caddy.process import CaddyProcess
from proxy.caddy.sink import CaddyRoutes
from proxy.routes import RouteTable
from proxy.tee import TeeSink

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOCAL_SUFFIXES = (".localhost", ".test", ".internal", ".local", ".lan", ".home.arpa")


def is_local_domain(domain: str) -> bool:
    """Whether no public CA would certify names under `domain` (then `auto` TLS uses
    Caddy's internal CA)."""
    domain = domain.lower().rstrip(".")
    try:
        ipaddress.ip_address(domain.strip("[]"))
    except ValueError:
        return domain == "localhost" or domain.endswith(_LOCAL_SUFFIXES)
    return True


def control_plane_dial(settings: Settings) -> str:
    """Where Caddy reaches the control plane: PF_HTTP, with a wildcard host made loopback."""
    host = settings.host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"


def admin_socket_for(settings: Settings) -> Path:
    """The unix socket of Caddy's admin API: PF_CADDY_ADMIN (`PATH` or `unix//PATH`), or
    `PF_DATA_DIR/caddy/admin.sock` when it is empty. Raises `AdminAddressError` (a
    `ValueError`) for a TCP address, a relative path or one too long for a socket."""
    if not settings.caddy_admin:
        return (settings.data_dir / "caddy" / "admin.sock").absolute()
    return admin_socket(settings.caddy_admin)


def layout_for(settings: Settings, access_log: str | None = None) -> CaddyLayout:
    tls = settings.caddy_tls
    if tls == "auto":
        tls = "internal" if is_local_domain(settings.domain) else "acme"
    https = None if tls == "off" else settings.caddy_https
    dial = control_plane_dial(settings)
    return CaddyLayout(
        domain=settings.domain.lower(),
        control_plane=dial,
        admin_socket=admin_socket_for(settings),
        http_listen=settings.caddy_http,
        https_listen=https,
        tls_issuer="acme" if tls == "acme" else "internal",
        acme_email=settings.caddy_acme_email,
        ask_url=f"http://{dial}/api/tls/ask",
        access_log=access_log,
        redirect_http=https is not None and settings.public_scheme == "https",
    )


class CaddyFrontend:
    def __init__(self, settings: Settings, table: RouteTable, tracker: ActivityTracker) -> None:
        self.settings = settings
        layout = layout_for(settings)
        self.admin = CaddyAdmin(layout.admin_socket)
        self.routes = CaddyRoutes(
            self.admin, layout, check_interval_s=settings.caddy_check_interval_s
        )
        self.activity = CaddyActivity(
            tracker,
            self.admin,
            self.routes,
            poll_s=settings.caddy_activity_poll_s,
            drain_timeout_s=settings.hibernate_drain_s,
        )
        self.routes.on_drain = self.activity.drain
        self.activity.on_drained = self.routes.drained
        self.sink = TeeSink(table, self.routes)
        self.process: CaddyProcess | None = None
        if settings.start_caddy:
            self.process = CaddyProcess(
                settings.caddy_bin,
                layout.admin_socket,
                settings.data_dir / "caddy",
                on_restart=self.routes.resync,
                startup_config=self.routes.startup_config,
            )

    async def open(self, aliases: Mapping[str, Sequence[str]]) -> None:
        """Bind the access-log socket, load custom domains, start Caddy if asked (raises
        `CaddyStartError` if it cannot), and start watching Caddy for restarts."""
        address = await self.activity.start(self.settings.caddy_activity_addr)
        self.routes.layout = dataclasses.replace(self.routes.layout, access_log=address)
        self.routes.load_aliases(aliases)
        if self.process is not None:
            await self.process.start()
        else:
            reason = open_to_others(self.admin.socket, owned=False)
            if reason is not None and self.admin.socket.parent.is_dir():
                log.warning(
                    "Caddy's admin socket %s may be open to other users: %s. Anyone who can "
                    "connect to it can rewrite every route and TLS policy; keep it in a folder "
                    "only Caddy's and pocketfleet's users can enter (deploy/: "
                    "RuntimeDirectoryMode=0700)",
                    self.admin.socket,
                    reason,
                )
        self.routes.start()

    def fresh(self, job: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """`job` (the idle sweep) run right after reading Caddy's in-flight counts, so that
        a request or event stream opened since the last poll keeps its instance awake."""

        async def run() -> T:
            await self.activity.refresh()
            return await job()

        return run

    async def aclose(self) -> None:
        await self.routes.aclose()
        await self.activity.aclose()
        if self.process is not None:
            await self.process.stop()
        await self.admin.aclose()
