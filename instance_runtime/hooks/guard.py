"""How a Python hook's failure becomes PocketBase's answer, and is logged (the error policy).

Contract: `guard_sync(fn, label)` / `guard_async(fn, label)` wrap a hook handler so that:

- an exception that came out of `e.next()` (the rest of the chain, the operation itself: a
  validation error, a later hook's refusal) passes through unchanged, whatever the handler
  did with it on the way out (re-raising it is not a failure of this handler);
- an `ApiError` the handler raised itself (`BadRequestError`, ...) is answered as it is and
  logged at INFO with the handler's name;
- any other exception is logged with its traceback and the handler's name, and becomes
  PocketBase's answer to an error that is not an `ApiError`: 400 "Something went wrong while
  processing your request." (`router.ToApiError`, checked against PocketBase 0.40.6: a JS hook
  that throws `new Error()` is answered so), its details never sent to the client.

`guard_async` also accepts a plain function: its result is awaited when it is awaitable (so a
request hook may be `def h(e): return e.next()` as well as `async def h(e): await e.next()`).
`apply_policy(exc, label)` is the policy alone (for routes and cron jobs, which have no
`next()`). `original_error(exc)` undoes the conversion (what the error hooks are given).
`handler_label(fn)` names a handler in logs: `pb_hooks.FILE.FUNCTION`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from instance_runtime.core.errors import ApiError
from instance_runtime.core.hooks import Event
from instance_runtime.hooks.errors import GENERIC_MESSAGE

log = logging.getLogger("instance_runtime.hooks")

E = TypeVar("E", bound=Event)

_PASSED = "_pf_hooks_passed_next"
_ORIGINAL = "_pf_hooks_original"


def handler_label(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{name}"


def _mark(exc: BaseException) -> None:
    with contextlib.suppress(AttributeError):  # no __dict__: then treated as the hook's
        setattr(exc, _PASSED, True)


def _passed(exc: BaseException) -> bool:
    return bool(getattr(exc, _PASSED, False))


def apply_policy(exc: Exception, label: str) -> Exception:
    """The exception to raise instead of `exc`, logged (see the module docstring)."""
    if isinstance(exc, ApiError):
        log.info("hook %s answered %s: %s", label, exc.status, exc.message)
        return exc
    log.error("hook %s failed", label, exc_info=exc)
    converted = ApiError(400, GENERIC_MESSAGE)
    setattr(converted, _ORIGINAL, exc)
    return converted


def original_error(exc: Exception) -> Exception:
    """The exception a hook raised, when `exc` is the 400 `apply_policy` made of it."""
    found = getattr(exc, _ORIGINAL, None)
    return found if isinstance(found, Exception) else exc


def guard_sync(fn: Callable[[E], Any], label: str) -> Callable[[E], Any]:
    """See the module docstring."""

    def handler(event: E) -> Any:
        step = event._next
        if step is not None:

            def passing() -> Any:
                try:
                    return step()
                except BaseException as exc:
                    _mark(exc)
                    raise

            event._next = passing
        try:
            return fn(event)
        except Exception as exc:
            if _passed(exc):
                raise
            replacement = apply_policy(exc, label)
            if replacement is exc:
                raise
            raise replacement from exc

    handler.__name__ = getattr(fn, "__name__", "handler")
    handler.__qualname__ = getattr(fn, "__qualname__", handler.__name__)
    return handler


def guard_async(fn: Callable[[E], Any], label: str) -> Callable[[E], Awaitable[Any]]:
    """See the module docstring."""

    async def handler(event: E) -> Any:
        step = event._next
        if step is not None:

            async def passing() -> Any:
                try:
                    return await step()
                except BaseException as exc:
                    _mark(exc)
                    raise

            event._next = passing
        try:
            result = fn(event)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:
            if _passed(exc):
                raise
            replacement = apply_policy(exc, label)
            if replacement is exc:
                raise
            raise replacement from exc

    handler.__name__ = getattr(fn, "__name__", "handler")
    handler.__qualname__ = getattr(fn, "__qualname__", handler.__name__)
    return handler
