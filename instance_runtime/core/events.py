"""The events the runtime triggers (PocketBase's `core/events.go`), one dataclass per shape.

Contract: every event is an `Event` (see `core.hooks`); record and collection events are tagged
with their collection's id and name, so `hook.on("posts")` sees only that collection's.

- `RecordEvent`: a model event inside the write transaction (`conn` is the writer); handlers may
  change `record` before `next()` and write through `conn`; raising refuses the operation.
- `RecordSuccessEvent`: after the transaction that made the change committed (`action` is
  `create`, `update` or `delete`; `record` is the record as written, or as it was when deleted).
- `RecordRequestEvent` / `RecordsListRequestEvent`: an API request about records, before the
  operation (`next()` runs it; afterwards `record` / `result` hold what will be answered).
- `RecordAuthRequestEvent`: a successful authentication, before the token is answered
  (`auth_method` is `password`, `oauth2`, `otp`, `mfa`, `refresh` or `impersonate`).
- `RecordAuthWithOAuth2RequestEvent`: an `auth-with-oauth2` request once the provider's user is
  known (`record` is the user found for it, None when one will be created from `create_data`;
  `next()` creates or links it, then answers).
- `RecordAuthWithPasswordRequestEvent`: an auth-with-password request once its identity was
  looked up (`record` None when nothing matched); `next()` checks the password and answers.
- `RecordAuthRefreshRequestEvent`: an auth-refresh request; `next()` answers.
- `CollectionSuccessEvent`: a committed change of collections.
- `MailerEvent`: a message about to be sent (`next()` sends; a handler may change or drop it).
- `SettingsReloadEvent`: the settings changed (`settings` is the new, unmasked dict).
- `RealtimeConnectRequestEvent`: a `GET /api/realtime` (`client` is the new, not yet registered
  client; a handler may change `idle_timeout_s` / `max_age_s`); `next()` registers the client
  and serves its stream until it ends.
- `RealtimeSubscribeRequestEvent`: a `POST /api/realtime` that passed its checks; a handler may
  change `subscriptions`; `next()` replaces the client's topics (and answers 204).
- `RealtimeMessageEvent`: a message about to be written to a client's stream (`PB_CONNECT`
  included); a handler may replace `message`, or drop it by not calling `next()` (which
  writes it). `info` is the request that opened the stream.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from instance_runtime.core.hooks import Event
from instance_runtime.core.models import Collection
from instance_runtime.core.realtime import Client
from instance_runtime.core.realtime import Message as RealtimeMessage
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema

if TYPE_CHECKING:
    from instance_runtime.tools.oauth2 import AuthUser

Record = dict[str, Any]
Action = Literal["create", "update", "delete"]


def _collection_tags(coll: Collection) -> tuple[str, ...]:
    return (coll.id, coll.name)


@dataclass(eq=False)
class RecordEvent(Event):
    conn: sqlite3.Connection
    schema: Schema
    collection: Collection
    record: Record
    info: RequestInfo
    original: Record | None = None

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection)


@dataclass(eq=False)
class RecordSuccessEvent(Event):
    collection: Collection
    record: Record
    action: Action
    original: Record | None = None

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection)


@dataclass(eq=False)
class RecordRequestEvent(Event):
    info: RequestInfo
    collection: Collection
    body: dict[str, Any] = field(default_factory=dict)
    record_id: str = ""
    record: dict[str, Any] | None = None

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection)


@dataclass(eq=False)
class RecordsListRequestEvent(Event):
    info: RequestInfo
    collection: Collection
    result: dict[str, Any] | None = None

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection)


@dataclass(eq=False)
class RecordAuthRequestEvent(Event):
    info: RequestInfo
    collection: Collection
    record: Record
    auth_method: str
    token: str = ""
    meta: dict[str, Any] | None = None

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection)


@dataclass(eq=False)
class RecordAuthWithOAuth2RequestEvent(Event):
    info: RequestInfo
    collection: Collection
    provider_name: str
    oauth2_user: AuthUser
    record: Record | None
    is_new_record: bool
    create_data: dict[str, Any] | None = None

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection)


@dataclass(eq=False)
class RecordAuthWithPasswordRequestEvent(Event):
    info: RequestInfo
    collection: Collection
    record: Record | None
    identity: str
    password: str
    identity_field: str = ""
    answer: dict[str, Any] | None = None

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection)


@dataclass(eq=False)
class RecordAuthRefreshRequestEvent(Event):
    info: RequestInfo
    collection: Collection
    record: Record
    answer: dict[str, Any] | None = None

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection)


@dataclass(eq=False)
class CollectionSuccessEvent(Event):
    collection: Collection
    action: Action

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection)


@dataclass(eq=False)
class MailerEvent(Event):
    message: Any
    kind: str = ""
    collection: Collection | None = None
    record: Record | None = None

    def tags(self) -> tuple[str, ...]:
        return _collection_tags(self.collection) if self.collection is not None else ()


@dataclass(eq=False)
class SettingsReloadEvent(Event):
    settings: dict[str, Any]


@dataclass(eq=False)
class RealtimeConnectRequestEvent(Event):
    info: RequestInfo
    client: Client
    idle_timeout_s: float
    max_age_s: float


@dataclass(eq=False)
class RealtimeSubscribeRequestEvent(Event):
    info: RequestInfo
    client: Client
    subscriptions: list[str]


@dataclass(eq=False)
class RealtimeMessageEvent(Event):
    info: RequestInfo
    client: Client
    message: RealtimeMessage


@dataclass(eq=False)
class LifecycleEvent(Event):
    """`on_serve` (the app is about to answer requests) and `on_terminate` (it is stopping)."""

    app: Any
