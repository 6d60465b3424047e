"""`HooksApp`: the `app` object of Python hooks (`from instance_runtime.hooks import app`).

Contract: one `HooksApp` (`app`) per process, attached by the loader to the runtime whose
`pb_hooks/` it loads (`hooks.loader`); used outside a runtime it raises `RuntimeError`.

- Events: `app.on_<hook>` for every hook of the runtime (`core.app_hooks.AppHooks`: model hooks
  `on_record_validate/create/update/delete`, `on_record_after_{create,update,delete}_success`,
  `on_collection_after_{create,update,delete}_success`, the request hooks
  `on_records_list_request`, `on_record_{view,create,update,delete}_request`,
  `on_record_auth_request`, `on_record_auth_with_{password,oauth2}_request`,
  `on_record_auth_refresh_request`, the realtime request hooks, `on_mailer_send`,
  `on_settings_reload`, `on_serve`, `on_terminate`) and the ones only hooks have
  (`on_bootstrap`, `on_record_after_{create,update,delete}_error`); see `hooks.binders`.
- `@app.route(method, path, require_auth=..., require_superuser=...)`: a custom route
  (`hooks.routes`). `@app.cron(expression, id=None)`: a job of the app's cron (`tools.cron`,
  listed by `GET /api/crons` under `id`, the function's name by default; an `async def` job is
  run to completion); ids starting with `__pb` are the system's (`ValueError`). A job that
  raises is logged; the next run happens as scheduled.
- Services: `app.records` (async, `hooks.services.Records`), `app.tx(e)` (the same, blocking,
  inside a model hook's transaction), `await app.transaction(fn)` / `app.transaction_sync(fn)`
  (`fn(tx)` in one write transaction; the sync one refuses to run on the writer thread, where
  it would wait for itself), `app.collections`, `app.export(collection, record)`,
  `app.mailer` (`message(...)` builds a `Message` from `settings.meta`'s sender, `send` queues
  it through `on_mailer_send`, `send_now` sends it at once), `app.http()` (the safe client,
  `hooks.http`), `app.settings()` (a copy of the current settings), `app.spawn(coroutine)`
  (run in the background on the app's event loop; failures logged), `app.logger`,
  `app.data_dir`, `app.hooks_dir`, `app.runtime` (the runtime's `core.app.App`).

Everything registered while a hook file loads belongs to that load: a reload takes it back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from instance_runtime.core.app import App
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
from instance_runtime.core.models import Collection
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.hooks import http, services
from instance_runtime.hooks.binders import AsyncHookBinder, SyncHookBinder
from instance_runtime.hooks.errors import NotFoundError
from instance_runtime.hooks.events import BootstrapEvent, RecordErrorEvent
from instance_runtime.hooks.guard import handler_label
from instance_runtime.hooks.registry import CronBinding, Extras, HooksState, RouteBinding
from instance_runtime.hooks.routes import HookRoute, RequestEvent
from instance_runtime.tools.cron import Schedule
from instance_runtime.tools.mailer import MailAddress, Message

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("instance_runtime.hooks")
hook_log = logging.getLogger("pb_hooks")

SYSTEM_JOB_PREFIX = "__pb"
_WRITER_THREAD = "db-writer"  # core.db's writer


def _addresses(value: str | Sequence[str | MailAddress]) -> list[MailAddress]:
    items = [value] if isinstance(value, str) else list(value)
    return [(item, "") if isinstance(item, str) else (item[0], item[1]) for item in items]


class HookMailer:
    """See the module docstring."""

    def __init__(self, state_of: Callable[[], HooksState]) -> None:
        self._state_of = state_of

    def message(
        self,
        *,
        to: str | Sequence[str | MailAddress],
        subject: str,
        html: str = "",
        text: str = "",
        cc: Sequence[str | MailAddress] = (),
        bcc: Sequence[str | MailAddress] = (),
        headers: Mapping[str, str] | None = None,
        from_address: str = "",
        from_name: str = "",
    ) -> Message:
        """A message from the app's sender (`settings.meta.senderAddress` / `senderName`)."""
        meta = self._state_of().runtime.settings.current.get("meta") or {}
        return Message(
            from_address=from_address or str(meta.get("senderAddress") or ""),
            from_name=from_name or str(meta.get("senderName") or ""),
            to=_addresses(to),
            cc=_addresses(cc),
            bcc=_addresses(bcc),
            subject=subject,
            html=html,
            text=text,
            headers=dict(headers or {}),
            context={"kind": "hook"},
        )

    def send(self, message: Message) -> None:
        """Queue `message` (sent in the background, retried; failures are logged)."""
        self._state_of().runtime.mailer.send(message)

    def send_now(self, message: Message) -> bool:
        """Send `message` in this thread (blocking): True when sent, False when an
        `on_mailer_send` handler dropped it; `MailerError` when it could not be sent."""
        return self._state_of().runtime.mailer.send_now(message)


class HooksApp:
    """See the module docstring."""

    # model hooks, inside the write transaction (writer thread)
    on_record_validate: SyncHookBinder[RecordEvent]
    on_record_create: SyncHookBinder[RecordEvent]
    on_record_update: SyncHookBinder[RecordEvent]
    on_record_delete: SyncHookBinder[RecordEvent]
    # after the commit / after a failure
    on_record_after_create_success: SyncHookBinder[RecordSuccessEvent]
    on_record_after_update_success: SyncHookBinder[RecordSuccessEvent]
    on_record_after_delete_success: SyncHookBinder[RecordSuccessEvent]
    on_record_after_create_error: SyncHookBinder[RecordErrorEvent]
    on_record_after_update_error: SyncHookBinder[RecordErrorEvent]
    on_record_after_delete_error: SyncHookBinder[RecordErrorEvent]
    on_collection_after_create_success: SyncHookBinder[CollectionSuccessEvent]
    on_collection_after_update_success: SyncHookBinder[CollectionSuccessEvent]
    on_collection_after_delete_success: SyncHookBinder[CollectionSuccessEvent]
    # requests
    on_records_list_request: AsyncHookBinder[RecordsListRequestEvent]
    on_record_view_request: AsyncHookBinder[RecordRequestEvent]
    on_record_create_request: AsyncHookBinder[RecordRequestEvent]
    on_record_update_request: AsyncHookBinder[RecordRequestEvent]
    on_record_delete_request: AsyncHookBinder[RecordRequestEvent]
    on_record_auth_request: AsyncHookBinder[RecordAuthRequestEvent]
    on_record_auth_with_password_request: AsyncHookBinder[RecordAuthWithPasswordRequestEvent]
    on_record_auth_refresh_request: AsyncHookBinder[RecordAuthRefreshRequestEvent]
    on_record_auth_with_oauth2_request: AsyncHookBinder[RecordAuthWithOAuth2RequestEvent]
    on_realtime_connect_request: AsyncHookBinder[RealtimeConnectRequestEvent]
    on_realtime_subscribe_request: AsyncHookBinder[RealtimeSubscribeRequestEvent]
    on_realtime_message_send: AsyncHookBinder[RealtimeMessageEvent]
    # mail, settings, lifecycle
    on_mailer_send: SyncHookBinder[MailerEvent]
    on_settings_reload: SyncHookBinder[SettingsReloadEvent]
    on_bootstrap: SyncHookBinder[BootstrapEvent]
    on_serve: SyncHookBinder[LifecycleEvent]
    on_terminate: SyncHookBinder[LifecycleEvent]

    def __init__(self) -> None:
        self._current: HooksState | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self.mailer = HookMailer(self._state)
        self.logger = hook_log
        s = self._state
        for name, annotation in HooksApp.__annotations__.items():  # the typed list above
            if name.startswith("on_"):
                asynchronous = str(annotation).startswith("AsyncHookBinder")
                binder = AsyncHookBinder if asynchronous else SyncHookBinder
                setattr(self, name, binder(s, name, _hook_of(name)))

    # ------------------------------------------------------------------ attachment
    def _attach(self, state: HooksState | None) -> None:
        self._current = state

    def _state(self) -> HooksState:
        state = self._current
        if state is None:
            raise RuntimeError(
                "instance_runtime.hooks.app is used by the hook files of a running instance "
                "(pb_hooks/*.py), not on its own"
            )
        return state

    @property
    def runtime(self) -> App:
        return self._state().runtime

    @property
    def data_dir(self) -> Path:
        return self._state().runtime.data_dir

    @property
    def hooks_dir(self) -> Path | None:
        return self._state().hooks_dir

    # ------------------------------------------------------------------ routes and crons
    def route(
        self,
        method: str,
        path: str,
        *,
        require_auth: bool | str | Sequence[str] = False,
        require_superuser: bool = False,
    ) -> Callable[[Callable[[RequestEvent], T]], Callable[[RequestEvent], T]]:
        """A custom route (see `hooks.routes`): `@app.route("GET", "/api/hello/{name}")`."""

        def decorate(fn: Callable[[RequestEvent], T]) -> Callable[[RequestEvent], T]:
            route = HookRoute(
                method,
                path,
                fn,
                self,
                require_auth=require_auth,
                require_superuser=require_superuser,
            )
            self._state().stage(RouteBinding(route, route.label))
            return fn

        return decorate

    def cron(self, expression: str, *, id: str | None = None) -> Callable[[F], F]:
        """A job of the app's cron: `@app.cron("*/5 * * * *")` (see the module docstring)."""
        Schedule.parse(expression)  # a bad expression fails the file that has it

        def decorate(fn: F) -> F:
            job_id = id or getattr(fn, "__name__", "")
            if not job_id:
                raise ValueError("a cron job needs an id")
            if job_id.startswith(SYSTEM_JOB_PREFIX):
                raise ValueError(f"cron job ids starting with {SYSTEM_JOB_PREFIX} are reserved")
            label = handler_label(fn)
            self._state().stage(CronBinding(job_id, expression, _guard_job(fn, label), label))
            return fn

        return decorate

    # ------------------------------------------------------------------ services
    @property
    def records(self) -> services.Records:
        return services.Records(self._state().runtime)

    @property
    def collections(self) -> services.Collections:
        return services.Collections(self._state().runtime)

    def tx(self, event: RecordEvent | RecordErrorEvent) -> services.Tx:
        """The record services inside the transaction of a model hook's event."""
        runtime = self._state().runtime
        schema = event.schema if isinstance(event, RecordEvent) else runtime.schema
        return services.Tx(event.conn, schema, runtime.hooks)

    async def transaction(self, fn: Callable[[services.Tx], T]) -> T:
        """`fn(tx)` in one write transaction (committed when it returns, rolled back when it
        raises); `fn` runs on the writer thread: keep it to database work."""
        runtime = self._state().runtime
        return await runtime.write(
            lambda conn, schema: fn(services.Tx(conn, schema, runtime.hooks))
        )

    def transaction_sync(self, fn: Callable[[services.Tx], T]) -> T:
        """`transaction` for a thread that is not the event loop's (a sync cron job)."""
        if threading.current_thread().name == _WRITER_THREAD:
            raise RuntimeError(
                "transaction_sync() inside a write transaction: use app.tx(e) in model hooks"
            )
        runtime = self._state().runtime
        return runtime.write_sync(lambda conn, schema: fn(services.Tx(conn, schema, runtime.hooks)))

    def export(
        self, collection: str | Collection, record: Record, info: RequestInfo | None = None
    ) -> dict[str, Any]:
        """A record's API JSON (see `hooks.services.export`)."""
        if isinstance(collection, Collection):
            coll = collection
        else:
            found = self._state().runtime.schema.find(collection)
            if found is None:
                raise NotFoundError("Missing collection context.")
            coll = found
        return services.export(coll, record, info)

    def settings(self) -> dict[str, Any]:
        """A copy of the current settings (secrets included: never answer them to a client)."""
        return copy.deepcopy(self._state().runtime.settings.current)

    def http(
        self, *, timeout: float = http.DEFAULT_TIMEOUT, headers: Mapping[str, str] | None = None
    ) -> httpx.AsyncClient:
        """A new safe HTTP client (`async with app.http() as client: ...`)."""
        return http.safe_client(timeout=timeout, headers=headers)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run `coroutine` in the background on the app's event loop (from any thread)."""
        label = getattr(coroutine, "__qualname__", repr(coroutine))

        async def run() -> None:
            try:
                await coroutine
            except Exception:
                log.exception("background task %s failed", label)

        loop = self._state().loop
        if loop is None or loop.is_closed():
            threading.Thread(target=asyncio.run, args=(run(),), daemon=True).start()
            return
        future = asyncio.run_coroutine_threadsafe(run(), loop)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)


def _guard_job(fn: Callable[[], Any], label: str) -> Callable[[], Any]:
    async def finish(result: Any) -> None:
        try:
            await result
        except Exception:
            log.exception("cron job %s failed", label)

    def job() -> Any:
        try:
            result = fn()
        except Exception:
            log.exception("cron job %s failed", label)
            return None
        return finish(result) if inspect.isawaitable(result) else None

    return job


_EXTRA_HOOKS = frozenset(f.name for f in dataclasses.fields(Extras))


def _hook_of(name: str) -> Callable[[HooksState], Any]:
    """The hook behind `app.NAME`: one only hooks have (`Extras`), else the runtime's."""
    if name in _EXTRA_HOOKS:
        return lambda state: getattr(state.extras, name)
    return lambda state: getattr(state.runtime.hooks, name)


app = HooksApp()
