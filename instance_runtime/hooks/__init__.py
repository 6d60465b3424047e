"""Python hooks for the pocketfleet engine: the public API of `pb_hooks/*.py` files.

    from instance_runtime.hooks import BadRequestError, RecordEvent, RequestEvent, app

    @app.on_record_create("posts")
    def clean_title(e: RecordEvent) -> None:
        title = str(e.record.get("title", "")).strip()
        if not title:
            raise BadRequestError("Posts need a title.")
        e.record["title"] = title
        e.next()

    @app.route("GET", "/api/hello/{name}")
    async def hello(e: RequestEvent) -> Response:
        return e.json(200, {"message": f"Hello {e.path_param('name')}!"})

    @app.cron("*/5 * * * *")
    async def tick() -> None:
        await app.records.create("ticks", {"at": "now"})

Everything here is typed (the package ships `py.typed`), so an editor completes `app.` and,
with the handler's parameter annotated, `e.`. Migrations (`pb_migrations/*.py`) annotate their
`up(app: MigrationApp)` / `down(app: MigrationApp)` with `MigrationApp` (docs/migrations.md).
See `docs/hooks.md` for the recipes, `hooks.app` for what `app` offers, `hooks.loader` for how
the files are loaded and reloaded.
"""

from __future__ import annotations

from starlette.responses import Response

from instance_runtime.core.events import (
    CollectionSuccessEvent,
    LifecycleEvent,
    MailerEvent,
    RealtimeConnectRequestEvent,
    RealtimeMessageEvent,
    RealtimeSubscribeRequestEvent,
    Record,
    RecordAuthRefreshRequestEvent,
    RecordAuthRequestEvent,
    RecordAuthWithOAuth2RequestEvent,
    RecordAuthWithPasswordRequestEvent,
    RecordEvent,
    RecordRequestEvent,
    RecordsListRequestEvent,
    RecordSuccessEvent,
    SettingsReloadEvent,
)
from instance_runtime.core.models import Collection
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.hooks.app import HookMailer, HooksApp, app
from instance_runtime.hooks.errors import (
    ApiError,
    BadRequestError,
    ForbiddenError,
    InternalServerError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
    ValidationError,
)
from instance_runtime.hooks.events import BootstrapEvent, RecordErrorEvent
from instance_runtime.hooks.routes import RequestEvent
from instance_runtime.hooks.services import (
    CollectionDraft,
    Collections,
    MigrationApp,
    Records,
    Tx,
    TxCollections,
)
from instance_runtime.tools.mailer import MailerError, Message

__all__ = [
    "ApiError",
    "BadRequestError",
    "BootstrapEvent",
    "Collection",
    "CollectionDraft",
    "CollectionSuccessEvent",
    "Collections",
    "ForbiddenError",
    "HookMailer",
    "HooksApp",
    "InternalServerError",
    "LifecycleEvent",
    "MailerError",
    "MailerEvent",
    "Message",
    "MigrationApp",
    "NotFoundError",
    "RealtimeConnectRequestEvent",
    "RealtimeMessageEvent",
    "RealtimeSubscribeRequestEvent",
    "Record",
    "RecordAuthRefreshRequestEvent",
    "RecordAuthRequestEvent",
    "RecordAuthWithOAuth2RequestEvent",
    "RecordAuthWithPasswordRequestEvent",
    "RecordErrorEvent",
    "RecordEvent",
    "RecordRequestEvent",
    "RecordSuccessEvent",
    "Records",
    "RecordsListRequestEvent",
    "RequestEvent",
    "RequestInfo",
    "Response",
    "SettingsReloadEvent",
    "TooManyRequestsError",
    "Tx",
    "TxCollections",
    "UnauthorizedError",
    "ValidationError",
    "app",
]
