"""core.hooks: next() chains, priorities, tags, stopping, errors; sync and async."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from instance_runtime.core.hooks import AsyncHook, Event, Hook


@dataclass(eq=False)
class Note(Event):
    tag: str = ""
    seen: list[str] = field(default_factory=list)

    def tags(self) -> tuple[str, ...]:
        return (self.tag,) if self.tag else ()


def _final(e: Note) -> str:
    e.seen.append("final")
    return "done"


def test_without_handlers_the_final_step_runs() -> None:
    assert Hook[Note]().trigger(Note(), _final) == "done"


def test_handlers_run_by_priority_then_binding_order_around_next() -> None:
    hook: Hook[Note] = Hook()

    def around(name: str):  # type: ignore[no-untyped-def]
        def handler(e: Note) -> object:
            e.seen.append(f"{name}>")
            result = e.next()
            e.seen.append(f"<{name}")
            return result

        return handler

    hook.bind(around("b"))
    hook.bind(around("c"))
    hook.bind(around("a"), priority=-1)
    event = Note()
    assert hook.trigger(event, _final) == "done"
    assert event.seen == ["a>", "b>", "c>", "final", "<c", "<b", "<a"]


def test_a_handler_that_does_not_call_next_stops_the_operation() -> None:
    hook: Hook[Note] = Hook()
    hook.bind(lambda e: "refused")
    event = Note()
    assert hook.trigger(event, _final) == "refused"
    assert event.seen == []


def test_an_error_in_a_handler_reaches_the_trigger() -> None:
    hook: Hook[Note] = Hook()

    def fail(e: Note) -> None:
        raise ValueError("nope")

    hook.bind(fail)
    with pytest.raises(ValueError, match="nope"):
        hook.trigger(Note(), _final)


def test_rebinding_an_id_replaces_and_unbind_removes() -> None:
    hook: Hook[Note] = Hook()
    hook.bind(lambda e: e.seen.append("old") or e.next(), id="x")
    hook.bind(lambda e: e.seen.append("new") or e.next(), id="x")
    event = Note()
    hook.trigger(event, _final)
    assert event.seen == ["new", "final"]
    hook.unbind("x")
    assert len(hook) == 0


def test_tagged_handlers_see_only_their_events() -> None:
    hook: Hook[Note] = Hook()
    hook.on("posts").bind(lambda e: e.seen.append("posts") or e.next())
    hook.bind(lambda e: e.seen.append("all") or e.next())
    posts, users = Note(tag="posts"), Note(tag="users")
    hook.trigger(posts, _final)
    hook.trigger(users, _final)
    assert posts.seen == ["posts", "all", "final"]
    assert users.seen == ["all", "final"]


def test_next_outside_a_trigger_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        Note().next()


def test_async_hooks_chain_with_await_next() -> None:
    hook: AsyncHook[Note] = AsyncHook()

    async def first(e: Note) -> object:
        e.seen.append("first")
        await asyncio.sleep(0)
        return await e.next()

    async def final(e: Note) -> str:
        e.seen.append("final")
        return "ok"

    hook.bind(first)
    event = Note()
    assert asyncio.run(hook.trigger(event, final)) == "ok"
    assert event.seen == ["first", "final"]
