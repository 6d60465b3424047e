"""What the hook files registered, so that a reload can take all of it back.

Contract:

- A `Binding` is one registration: a handler on a hook (`HookBinding`), a custom route
  (`RouteBinding`) or a cron job (`CronBinding`). `binding.activate(state)` puts it in place
  and returns the function that removes it again.
- `Registry` holds the bindings of one load of the hook files. `activate(state)` puts them all
  in place in registration order; `deactivate()` removes them (idempotent). A cron job or a
  route that a later binding replaced is left to that binding.
- `registry.handlers(hook)` lists the (guarded) handlers bound to `hook`, in its order, for
  triggering one registry's lifecycle handlers alone (a reload: the old files' `on_terminate`,
  the new ones' `on_bootstrap`/`on_serve`).
- `Extras` holds the hooks only Python hooks have (`hooks.events`); `HooksState` is what one
  runtime's hooks share: the runtime `App`, the hooks folder, the extras, the route table, the
  active registry, and the bindings being staged while a file loads (`staging`; None outside a
  load, where a registration takes effect at once and joins the active registry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from instance_runtime.core.app import App
from instance_runtime.core.hooks import AsyncHook, Hook
from instance_runtime.hooks.events import BootstrapEvent, RecordErrorEvent
from instance_runtime.hooks.routes import HookRoute, RouteTable

Undo = Callable[[], None]
AnyHook = Hook[Any] | AsyncHook[Any]


class Binding(Protocol):
    label: str

    def activate(self, state: HooksState) -> Undo: ...


@dataclass(eq=False)
class HookBinding:
    hook: Callable[[HooksState], AnyHook]
    fn: Callable[[Any], Any]
    tags: tuple[str, ...]
    priority: int
    label: str

    def activate(self, state: HooksState) -> Undo:
        hook = self.hook(state)
        target = hook.on(*self.tags) if self.tags else hook
        handler_id = target.bind(self.fn, priority=self.priority)
        return lambda: hook.unbind(handler_id)


@dataclass(eq=False)
class RouteBinding:
    route: HookRoute
    label: str

    def activate(self, state: HooksState) -> Undo:
        state.routes.add(self.route)
        return lambda: state.routes.remove(self.route)


@dataclass(eq=False)
class CronBinding:
    job_id: str
    expression: str
    fn: Callable[[], Any]
    label: str

    def activate(self, state: HooksState) -> Undo:
        cron = state.runtime.cron
        cron.add(self.job_id, self.expression, self.fn)

        def undo() -> None:
            job = cron.job(self.job_id)
            if job is not None and job.fn is self.fn:
                cron.remove(self.job_id)

        return undo


class Registry:
    """See the module docstring."""

    def __init__(self, bindings: list[Binding] | None = None) -> None:
        self.bindings: list[Binding] = list(bindings or [])
        self._undo: list[Undo] = []

    def activate(self, state: HooksState) -> None:
        for binding in self.bindings:
            self._undo.append(binding.activate(state))

    def add_active(self, binding: Binding, state: HooksState) -> None:
        """Register `binding` now (a registration made outside a load)."""
        self.bindings.append(binding)
        self._undo.append(binding.activate(state))

    def deactivate(self) -> None:
        undo, self._undo = self._undo, []
        for step in reversed(undo):
            step()

    def handlers(self, hook: AnyHook, state: HooksState) -> list[Callable[[Any], Any]]:
        found = [b for b in self.bindings if isinstance(b, HookBinding) and b.hook(state) is hook]
        found.sort(key=lambda b: b.priority)  # stable: registration order within a priority
        return [b.fn for b in found]

    def __len__(self) -> int:
        return len(self.bindings)


@dataclass(eq=False)
class Extras:
    on_bootstrap: Hook[BootstrapEvent] = field(default_factory=Hook)
    on_record_after_create_error: Hook[RecordErrorEvent] = field(default_factory=Hook)
    on_record_after_update_error: Hook[RecordErrorEvent] = field(default_factory=Hook)
    on_record_after_delete_error: Hook[RecordErrorEvent] = field(default_factory=Hook)


@dataclass(eq=False)
class HooksState:
    runtime: App
    hooks_dir: Path | None
    extras: Extras = field(default_factory=Extras)
    routes: RouteTable = field(default_factory=RouteTable)
    registry: Registry = field(default_factory=Registry)
    staging: list[Binding] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    files: list[str] = field(default_factory=list)  # the hook files of the last load
    failed: list[str] = field(default_factory=list)  # those that failed to load

    def stage(self, binding: Binding) -> None:
        if self.staging is not None:
            self.staging.append(binding)
        else:
            self.registry.add_active(binding, self)
