"""Every hook of the runtime's app, in one place (PocketBase's `app.OnXxx()` methods).

Contract: `AppHooks` is a plain container; the code that triggers each hook names it here, and
extensions (Python hooks, realtime) bind to them. Model hooks (`on_record_create`, ...) are
sync and run inside the write transaction; `..._success` hooks run after the commit, in the
event loop's thread; request hooks are async.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from instance_runtime.core.events import (
    CollectionSuccessEvent,
    LifecycleEvent,
    MailerEvent,
    RealtimeConnectRequestEvent,
    RealtimeMessageEvent,
    RealtimeSubscribeRequestEvent,
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
from instance_runtime.core.hooks import AsyncHook, Hook


@dataclass(eq=False)
class AppHooks:
    # models, inside the write transaction
    on_record_validate: Hook[RecordEvent] = field(default_factory=Hook)
    on_record_create: Hook[RecordEvent] = field(default_factory=Hook)
    on_record_update: Hook[RecordEvent] = field(default_factory=Hook)
    on_record_delete: Hook[RecordEvent] = field(default_factory=Hook)
    # after the commit
    on_record_after_create_success: Hook[RecordSuccessEvent] = field(default_factory=Hook)
    on_record_after_update_success: Hook[RecordSuccessEvent] = field(default_factory=Hook)
    on_record_after_delete_success: Hook[RecordSuccessEvent] = field(default_factory=Hook)
    on_collection_after_create_success: Hook[CollectionSuccessEvent] = field(default_factory=Hook)
    on_collection_after_update_success: Hook[CollectionSuccessEvent] = field(default_factory=Hook)
    on_collection_after_delete_success: Hook[CollectionSuccessEvent] = field(default_factory=Hook)
    # requests
    on_records_list_request: AsyncHook[RecordsListRequestEvent] = field(default_factory=AsyncHook)
    on_record_view_request: AsyncHook[RecordRequestEvent] = field(default_factory=AsyncHook)
    on_record_create_request: AsyncHook[RecordRequestEvent] = field(default_factory=AsyncHook)
    on_record_update_request: AsyncHook[RecordRequestEvent] = field(default_factory=AsyncHook)
    on_record_delete_request: AsyncHook[RecordRequestEvent] = field(default_factory=AsyncHook)
    on_record_auth_request: AsyncHook[RecordAuthRequestEvent] = field(default_factory=AsyncHook)
    on_record_auth_with_password_request: AsyncHook[RecordAuthWithPasswordRequestEvent] = field(
        default_factory=AsyncHook
    )
    on_record_auth_refresh_request: AsyncHook[RecordAuthRefreshRequestEvent] = field(
        default_factory=AsyncHook
    )
    on_record_auth_with_oauth2_request: AsyncHook[RecordAuthWithOAuth2RequestEvent] = field(
        default_factory=AsyncHook
    )
    # realtime (apis.realtime)
    on_realtime_connect_request: AsyncHook[RealtimeConnectRequestEvent] = field(
        default_factory=AsyncHook
    )
    on_realtime_subscribe_request: AsyncHook[RealtimeSubscribeRequestEvent] = field(
        default_factory=AsyncHook
    )
    on_realtime_message_send: AsyncHook[RealtimeMessageEvent] = field(default_factory=AsyncHook)
    # mail, settings, lifecycle
    on_mailer_send: Hook[MailerEvent] = field(default_factory=Hook)
    on_settings_reload: Hook[SettingsReloadEvent] = field(default_factory=Hook)
    on_serve: Hook[LifecycleEvent] = field(default_factory=Hook)
    on_terminate: Hook[LifecycleEvent] = field(default_factory=Hook)
