"""The typed decorators behind `app.on_...`: one object per hook of the app.

Contract: `SyncHookBinder[E]` (hooks triggered synchronously: model hooks inside the write
transaction, success/error events, mail, settings, lifecycle) and `AsyncHookBinder[E]` (request
hooks, awaited on the event loop) are used three ways, all equivalent:

    @app.on_record_create("posts", "comments", priority=-1)   # tagged: only these collections
    def handler(e: RecordEvent) -> None: ...

    @app.on_record_create                                      # every collection
    def handler(e: RecordEvent) -> None: ...

    app.on_record_create.bind(handler, "posts")

Tags are collection names or ids (for record and collection events; a mail's collection for
`on_mailer_send`). Lower `priority` runs first, then registration order. Each handler is guarded
(`guard`: errors answered as PocketBase and logged). A sync hook refuses an `async def` handler
(`TypeError` when it is registered: nothing would await it; use `app.spawn()` for background
work); an async hook takes both kinds. The decorator returns the function unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from instance_runtime.core.hooks import AsyncHook, Event, Hook
from instance_runtime.hooks.guard import guard_async, guard_sync, handler_label
from instance_runtime.hooks.registry import HookBinding, HooksState

E = TypeVar("E", bound=Event)
R = TypeVar("R")

StateOf = Callable[[], HooksState]


class _Binder(Generic[E]):
    _async = False

    def __init__(self, state_of: StateOf, name: str, select: Callable[[HooksState], Any]) -> None:
        self._state_of = state_of
        self.name = name
        self._select = select

    @overload
    def __call__(self, fn: Callable[[E], R], /) -> Callable[[E], R]: ...

    @overload
    def __call__(
        self, *tags: str, priority: int = 0
    ) -> Callable[[Callable[[E], R]], Callable[[E], R]]: ...

    def __call__(self, *args: Any, priority: int = 0) -> Any:
        if len(args) == 1 and callable(args[0]) and not isinstance(args[0], str):
            self.bind(args[0])
            return args[0]
        for tag in args:
            if not isinstance(tag, str):
                raise TypeError(f"{self.name}(): tags are collection names, not {tag!r}")

        def decorate(fn: Callable[[E], R]) -> Callable[[E], R]:
            self.bind(fn, *args, priority=priority)
            return fn

        return decorate

    def bind(self, fn: Callable[[E], Any], *tags: str, priority: int = 0) -> None:
        """Register `fn` (see the module docstring)."""
        if not callable(fn):
            raise TypeError(f"{self.name}(): {fn!r} is not callable")
        if not self._async and inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"{self.name} handlers run synchronously and must be plain functions "
                f"(def, not async def): {handler_label(fn)}"
            )
        label = handler_label(fn)
        guarded = guard_async(fn, label) if self._async else guard_sync(fn, label)
        self._state_of().stage(HookBinding(self._select, guarded, tuple(tags), priority, label))

    def hook(self) -> Hook[E] | AsyncHook[E]:
        """The underlying hook of the current runtime (for triggering in tests and tools)."""
        found: Hook[E] | AsyncHook[E] = self._select(self._state_of())
        return found


class SyncHookBinder(_Binder[E]):
    """See the module docstring."""


class AsyncHookBinder(_Binder[E]):
    """See the module docstring."""

    _async = True
