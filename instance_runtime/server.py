"""The ASGI application and `serve()`: one instance, like `pocketbase serve`.

Contract: `create_app(data_dir)` returns a Starlette app serving the APIs of `apis/` over the
`App` of `data_dir`, behind the request pipeline of `apis.middlewares`; every error is
PocketBase's JSON (`ApiError` as is, an unknown route 404, anything unexpected 500 "Something
went wrong while processing your request.").
With `hooks_dir`, the Python hooks of that folder are loaded (and, with `hooks_watch`,
reloaded when they change; `instance_runtime.hooks.loader`), their routes after the APIs'.
With `migrations_dir`, its migrations (`core.migrations`) are applied once the hooks are
loaded, before the app is returned (so before serving, as PocketBase); one that fails raises
`MigrationError` with nothing of the batch applied. With `automigrate_on` too, collection changes
through the API write migration files into that folder (`core.automigrate`).
`serve(data_dir, host, port, hooks_dir, ...)` runs it with uvicorn until SIGTERM/SIGINT, then drains
writes and checkpoints the database; with `PF_ACTIVITY_SOCKET` in the environment it also
reports its activity to the control plane (`instance_runtime.activity`). After
`notify_serving(fd)` (a zygote's child: `instance_runtime.zygote`), `serve()` writes `serving\n`
on `fd` and closes it once it listens with its lifespan started, so that whoever started it
need not poll its port.
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
from starlette.requests import Request
from starlette.responses import Response

from instance_runtime.activity import ENV_SOCKET, ActivityMiddleware, ActivityReporter
from instance_runtime.apis import (
    backups,
    batch,
    collections,
    collections_meta,
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
    sql,
)
from instance_runtime.apis.base import error_response
from instance_runtime.apis.middlewares import RequestPipeline
from instance_runtime.apis.routing import IndexedRouter
from instance_runtime.core import auth_origins, automigrate, file_storage, migrations
from instance_runtime.core import crons as app_crons
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.events import LifecycleEvent
from instance_runtime.hooks import loader as python_hooks

log = logging.getLogger("instance_runtime")
SERVING = b"serving\n"
_serving_fd: list[int] = []  # where `serve()` says it listens (`notify_serving`)


def notify_serving(fd: int) -> None:
    """Have `serve()` write `SERVING` on `fd`, then close it, once it listens."""
    _serving_fd[:] = [fd]


def _say_serving() -> None:
    while _serving_fd:
        fd = _serving_fd.pop()
        try:
            os.write(fd, SERVING)
        except OSError as err:  # nobody waits any more: serve on
            log.warning("could not say that the server is up: %s", err)
        finally:
            os.close(fd)


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
    data_dir: Path,
    hooks_dir: Path | None = None,
    *,
    hooks_watch: bool = True,
    migrations_dir: Path | None = None,
    automigrate_on: bool = False,
) -> Starlette:
    """See the module docstring."""
    runtime = App(data_dir)
    auth_origins.bind(runtime.hooks)
    record_auth_otp.bind(runtime)
    record_auth_oauth2.bind(runtime)
    realtime.bind(runtime)
    file_storage.bind(runtime)
    app_crons.bind(runtime)
    instance_backups = backups.bind(runtime)  # after the system jobs: auto backups list last
    hook_routes = python_hooks.install(runtime, hooks_dir, watch=hooks_watch)  # last
    if migrations_dir is not None:
        try:
            migrations.apply_at_start(runtime, migrations_dir)
        except BaseException:
            runtime.close()
            raise
        if automigrate_on:
            automigrate.enable(runtime, migrations_dir)
        folder = migrations_dir  # a restored backup gets them too, as a restarted PocketBase
        instance_backups.on_restored(lambda: migrations.apply_at_start(runtime, folder))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime.hooks.on_serve.trigger(LifecycleEvent(runtime), lambda e: None)
        yield
        runtime.hooks.on_terminate.trigger(LifecycleEvent(runtime), lambda e: None)
        runtime.close()

    app = Starlette(
        routes=[
            *records.routes,  # first: the most requested (no route before it matches its paths)
            *health.routes,
            *collections_meta.routes,  # before /api/collections/{collection}/...
            *collections.routes,
            *record_auth.routes,
            *record_auth_email.routes,
            *record_auth_otp.routes,
            *record_auth_oauth2.routes,
            *batch.routes,
            *settings.routes,
            *sql.routes,
            *logs.routes,
            *crons.routes,
            *backups.routes,
            *realtime.routes,
            *files.routes,
            hook_routes,
        ],
        lifespan=lifespan,
    )
    # the same routes, each path tried only against those that can match it
    app.router = IndexedRouter(app.router.routes, lifespan=lifespan)
    # the whole middleware stack in one layer: the restart gate (held during a restore),
    # PocketBase's middlewares, starlette's two exception layers (`apis.middlewares`)
    app.middleware_stack = RequestPipeline(
        app.router,
        runtime,
        gate=backups.gate_of(runtime),
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        server_error=_server_error,
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
    migrations_dir: Path | None = None,
    automigrate_on: bool = False,
) -> None:
    """See the module docstring."""
    import uvicorn

    from instance_runtime.http_protocol import HttpProtocol

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = create_app(
        data_dir,
        hooks_dir,
        hooks_watch=hooks_watch,
        migrations_dir=migrations_dir,
        automigrate_on=automigrate_on,
    )
    reporter_path = os.environ.get(ENV_SOCKET)
    reporter = ActivityReporter(reporter_path) if reporter_path else None
    config = uvicorn.Config(
        ActivityMiddleware(app, reporter) if reporter is not None else app,
        host=host,
        port=port,
        http=HttpProtocol,  # httptools, one send per response
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # as PocketBase: X-Forwarded-For counts only via trustedProxy
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    runtime: App = app.state.runtime

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                _say_serving()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            realtime.realtime_of(runtime).close()  # open event streams would hold up the stop
            await super().shutdown(sockets)

    log.info("Server started at http://%s:%s", host, port)
    try:
        Server(config).run()
    finally:
        if reporter is not None:
            reporter.close()
