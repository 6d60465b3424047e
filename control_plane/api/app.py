"""The ASGI application of `pocketfleet serve`: the API on the apex host, the embedded proxy on
every `NAME.domain` host.

In front of the apex only (instance traffic never passes them), three pure-ASGI middlewares:
`ApexHostMiddleware` (the apex's own names only), `ClientAddressMiddleware` (the real client
address behind trusted proxies) and `BodyLimitMiddleware` (body size and read timeout)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from control_plane.api import (
    accounts,
    backups,
    deploys,
    domains,
    engines,
    files,
    fleet,
    health,
    hibernation,
    instances,
    jobs,
    nodes,
    sessions,
    ssh_keys,
    tokens,
)
from control_plane.api.apex_hosts import ApexHostMiddleware, any_ip_address, apex_names
from control_plane.api.body_limit import BodyLimitMiddleware
from control_plane.api.client_address import ClientAddressMiddleware
from control_plane.api.errors import install_error_handlers
from control_plane.context import ControlPlane
from control_plane.settings import Settings
from control_plane.sftp.server import SftpServer
from dashboard import file_pages, install_dashboard
from proxy.activity import ActivityTracker
from proxy.embedded import EmbeddedProxy
from proxy.handoff import HandoffStore
from proxy.hostrouting import HostDispatcher
from proxy.routes import RouteTable


def create_api(
    settings: Settings,
    routes: RouteTable,
    activity: ActivityTracker,
    proxy: EmbeddedProxy | None = None,
    handoffs: HandoffStore | None = None,
) -> FastAPI:
    """The API; its lifespan opens the control plane (and closes the proxy beside it)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cp = await ControlPlane.open(settings, routes=routes, activity=activity, handoffs=handoffs)
        app.state.cp = cp
        cp.start_reconciling()
        sftp = SftpServer(settings, cp.ssh_keys, cp.files)  # on PF_SFTP, unless off
        await sftp.start()
        if proxy is not None:  # asleep hosts wake on their next request
            proxy.use_waker(cp.reconciler.hibernator, settings.wake_timeout_s)
        try:
            yield
        finally:
            if proxy is not None:
                proxy.use_waker(None, settings.wake_timeout_s)
            await sftp.close()
            await cp.close()
            if proxy is not None:
                await proxy.aclose()

    app = FastAPI(
        title="pocketfleet",
        summary="Self-hosted hosting for PocketBase backends",
        description=(
            "Every refusal has one body, `ErrorPublic`. A JSON body is strict JSON (RFC 8259: "
            "no `NaN` or `Infinity`, no number a double cannot hold, no lone surrogate) and no "
            "string in it, key or value, holds the NUL character; anything else is a 422."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (health, accounts, sessions, tokens, instances, hibernation, fleet, engines):
        app.include_router(module.router)
    app.include_router(backups.router)
    app.include_router(domains.router)
    app.include_router(ssh_keys.router)
    app.include_router(files.router)
    app.include_router(jobs.router)
    app.include_router(deploys.router)
    app.include_router(nodes.router)
    install_dashboard(app)
    # outermost last: a foreign Host is refused first, then the client address is found,
    # then the body is limited
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        read_timeout_s=settings.body_read_timeout_s,
        # uploads (API and dashboard): PF_FILES_MAX_FILE_MB
        overrides=[
            files.upload_limit(settings),
            *deploys.body_limits(settings),  # archives: PF_DEPLOY_MAX_MB; plans' manifests
            *file_pages.body_limits(settings),
        ],
    )
    app.add_middleware(ClientAddressMiddleware, settings=settings)
    app.add_middleware(
        ApexHostMiddleware, names=apex_names(settings), any_ip=any_ip_address(settings)
    )
    return app


def create_app(settings: Settings) -> HostDispatcher:
    routes = RouteTable()
    activity = ActivityTracker()
    handoffs = HandoffStore()
    proxy = EmbeddedProxy(routes, activity, handoffs=handoffs)
    api = create_api(settings, routes, activity, proxy, handoffs)
    return HostDispatcher(api, proxy, settings.domain)
