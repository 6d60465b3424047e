"""Event hooks with `next()` chains: PocketBase's `tools/hook`, for sync and async handlers.

Contract:

- `Hook[E]` holds handlers for events of type `E` (an `Event`). `bind(fn, id=..., priority=...)`
  adds one (lower priority runs first, then binding order) and returns its id; `unbind(id)`
  removes it. `trigger(event, final)` calls the first handler with the event; each handler calls
  `event.next()` to run the rest of the chain, ending with `final(event)`. A handler that does not
  call `next()` stops the chain (the operation does not happen); one that raises makes
  `trigger` raise. With no handlers, `trigger` is just `final(event)`.
- `AsyncHook[E]` is the same for coroutine handlers: `await event.next()`.
- `hook.on(*tags)` binds handlers that run only for events whose `tags()` include one of the
  tags (collection ids and names for record and collection events); untagged handlers see
  every event.
- Sync hooks run where the event happens: model hooks inside the write transaction on the
  writer thread, so a handler's writes (`event.conn`) commit or roll back with the operation.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

E = TypeVar("E", bound="Event")
H = TypeVar("H")

_ids = itertools.count(1)


class Event:
    """The base of every event: `next()` continues the chain it was triggered through."""

    _next: Callable[[], Any] | None = None

    def next(self) -> Any:
        """Run the rest of the chain (for an async hook, await the result)."""
        step = self._next
        if step is None:
            raise RuntimeError("next() called on an event that is not being triggered")
        return step()

    def tags(self) -> tuple[str, ...]:
        """What tagged handlers match against (empty: only untagged handlers run)."""
        return ()


@dataclass(frozen=True)
class _Handler(Generic[H]):
    id: str
    priority: int
    order: int
    fn: H
    tags: frozenset[str]


class _Chain(Generic[H]):
    def __init__(self) -> None:
        self._handlers: list[_Handler[H]] = []
        self._tagged = False  # whether any handler has tags (else every handler runs)

    def bind(self, fn: H, *, id: str = "", priority: int = 0) -> str:
        return self._add(fn, id, priority, frozenset())

    def _add(self, fn: H, id: str, priority: int, tags: frozenset[str]) -> str:
        handler_id = id or f"h{next(_ids)}"
        kept = [h for h in self._handlers if h.id != handler_id]
        kept.append(_Handler(handler_id, priority, next(_ids), fn, tags))
        kept.sort(key=lambda h: (h.priority, h.order))
        self._set(kept)
        return handler_id

    def _set(self, handlers: list[_Handler[H]]) -> None:
        self._handlers = handlers
        self._tagged = any(h.tags for h in handlers)

    def unbind(self, *ids: str) -> None:
        self._set([h for h in self._handlers if h.id not in ids])

    def unbind_all(self) -> None:
        self._set([])

    def __len__(self) -> int:
        return len(self._handlers)

    def _matching(self, event: Event) -> list[H]:
        handlers = self._handlers
        if not self._tagged:
            return [h.fn for h in handlers]
        tags = set(event.tags())
        return [h.fn for h in handlers if not h.tags or h.tags & tags]


class Hook(_Chain[Callable[[E], Any]]):
    """See the module docstring."""

    def on(self, *tags: str) -> _Tagged[Callable[[E], Any]]:
        return _Tagged(self, frozenset(tags))

    def trigger(self, event: E, final: Callable[[E], Any]) -> Any:
        if not self._handlers:
            return final(event)
        handlers = self._matching(event)
        saved = event._next

        def step(index: int) -> Any:
            if index == len(handlers):
                event._next = saved
                return final(event)
            event._next = lambda: step(index + 1)
            return handlers[index](event)

        try:
            return step(0)
        finally:
            event._next = saved


class AsyncHook(_Chain[Callable[[E], Awaitable[Any]]]):
    """See the module docstring."""

    def on(self, *tags: str) -> _Tagged[Callable[[E], Awaitable[Any]]]:
        return _Tagged(self, frozenset(tags))

    async def trigger(self, event: E, final: Callable[[E], Awaitable[Any]]) -> Any:
        if not self._handlers:
            return await final(event)
        handlers = self._matching(event)
        saved = event._next

        async def step(index: int) -> Any:
            if index == len(handlers):
                event._next = saved
                return await final(event)
            event._next = lambda: step(index + 1)
            return await handlers[index](event)

        try:
            return await step(0)
        finally:
            event._next = saved


class _Tagged(Generic[H]):
    """`hook.on(tags)`: binds handlers that see only the events carrying one of `tags`."""

    def __init__(self, chain: _Chain[H], tags: frozenset[str]) -> None:
        self._chain = chain
        self._tags = tags

    def bind(self, fn: H, *, id: str = "", priority: int = 0) -> str:
        return self._chain._add(fn, id, priority, self._tags)
