"""The ASGI application and `serve()`: one instance, like `pocketbase serve`.

Contract: `create_app(data_dir)` returns a Starlette app serving the APIs of `apis/` over the
`App` of `data_dir`, behind the request pipeline of `apis.middlewares`; every error is
PocketBase's JSON (`ApiError` as is, an unknown route 404, anything unexpected 500 "Something
went wrong while processing your request.").
With `hooks_dir`, the Python hooks of that folder are loaded (and, with `hooks_watch`,
reloaded when they change; `instance_runtime.hooks.loader`), their routes after the APIs'.
`serve(data_dir, host, port, hooks_dir)` runs it with uvicorn until SIGTERM/SIGINT, then drains
writes and checkpoints the database; with `PF_ACTIVITY_SOCKET` in the environment it also
reports its activity to the control plane (`instance_runtime.activity`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from instance_runtime.activity import ENV_SOCKET, ActivityMiddleware, ActivityReporter
from instance_runtime.apis import (
    batch,
    collections,
    crons,
    files,
    health,
    logs,
    realtime,
    record_auth,
    record_auth_email,
    record_auth_oauth2,
    record_auth_otp,
    records,
    settings,
)
from instance_runtime.apis.base import error_response
from instance_runtime.apis.middlewares import RequestPipeline
from instance_runtime.core import auth_origins, file_storage
from instance_runtime.core import crons as app_crons
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.events import LifecycleEvent
from instance_runtime.hooks import loader as python_hooks

log = logging.getLogger("instance_runtime")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(ApiError(404, "File not found."))
    if exc.status_code == 405:  # PocketBase: a GET falls through to its static files route
        found = "File not found." if request.method in ("GET", "HEAD") else None
        return error_response(ApiError(404, found or "The requested resource wasn't found."))
    return error_response(ApiError(exc.status_code, str(exc.detail)))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(ApiError(500, "Something went wrong while processing your request."))


def create_app(
    data_dir: Path, hooks_dir: Path | None = None, *, hooks_watch: bool = True
) -> Starlette:
    """See the module docstring."""
    runtime = App(data_dir)
    auth_origins.bind(runtime.hooks)
    record_auth_otp.bind(runtime)
    record_auth_oauth2.bind(runtime)
    realtime.bind(runtime)
    file_storage.bind(runtime)
    app_crons.bind(runtime)
    hook_routes = python_hooks.install(runtime, hooks_dir, watch=hooks_watch)  # last

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime.hooks.on_serve.trigger(LifecycleEvent(runtime), lambda e: None)
        yield
        runtime.hooks.on_terminate.trigger(LifecycleEvent(runtime), lambda e: None)
        runtime.close()

    app = Starlette(
        routes=[
            *health.routes,
            *collections.routes,
            *records.routes,
            *record_auth.routes,
            *record_auth_email.routes,
            *record_auth_otp.routes,
            *record_auth_oauth2.routes,
            *batch.routes,
            *settings.routes,
            *logs.routes,
            *crons.routes,
            *realtime.routes,
            *files.routes,
            hook_routes,
        ],
        middleware=[Middleware(RequestPipeline, runtime=runtime)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app


def serve(
    data_dir: Path,
    host: str,
    port: int,
    hooks_dir: Path | None = None,
    *,
    hooks_watch: bool = True,
) -> None:
    """See the module docstring."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = create_app(data_dir, hooks_dir, hooks_watch=hooks_watch)
    reporter_path = os.environ.get(ENV_SOCKET)
    reporter = ActivityReporter(reporter_path) if reporter_path else None
    config = uvicorn.Config(
        ActivityMiddleware(app, reporter) if reporter is not None else app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    runtime: App = app.state.runtime

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            realtime.realtime_of(runtime).close()  # open event streams would hold up the stop
            await super().shutdown(sockets)

    log.info("Server started at http://%s:%s", host, port)
    try:
        Server(config).run()
    finally:
        if reporter is not None:
            reporter.close()
