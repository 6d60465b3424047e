"""Loading `pb_hooks/*.py` into a runtime, and reloading them when they change.

Contract:

- `install(runtime, hooks_dir, watch=True)` attaches `hooks.app` to `runtime`, loads the hook
  files and returns the `RouteTable` the server places after its own routes. With `hooks_dir`
  None nothing is loaded (the route table stays empty) and nothing is watched.
- Hook files are the `*.py` files directly in `hooks_dir` whose names do not start with `_` or
  `.`, executed in name order, each as its own module `pb_hooks.<name>` (characters that are
  not allowed in a name become `_`). Other modules of the folder are helpers the hook files
  import from the package `pb_hooks` (`from pb_hooks import _shared`, `import pb_hooks.lib.x`
  for a sub-folder `lib/`). Sources are compiled in memory: nothing is written into the
  folder (no `__pycache__`) and no bytecode found there is used.
- A file that fails to execute (a syntax error, an exception at import, a bad cron
  expression, an `async def` given to a sync hook, ...) is logged with its traceback and
  counts for nothing: what it registered before failing is dropped. The others load.
- Reload (when `watch`): once serving, the folder is polled every `PF_HOOKS_POLL_INTERVAL`
  seconds (default 1.0): the names, sizes, mtimes and inodes of its `*.py` files (sub-folders
  included, `.`-names and `__pycache__` skipped). A change that is still the same at the next
  poll (so a file being written is not loaded half-written) reloads every hook file in
  place: the new files are executed first (staged, nothing bound yet), then — in one step on
  the database's writer thread, so a model hook never sees a half-swapped set — the old
  registrations are removed and the new ones put in place; the old files' `on_terminate`
  handlers run before, the new files' `on_bootstrap` and `on_serve` handlers after.

  Why in place rather than restarting the process (PocketBase execs itself): connections stay
  up (realtime streams keep their subscriptions, no request finds the port closed during a
  restart), the database, caches and rate limiters keep their state, and nothing depends on
  the interpreter being re-executable inside the instance's sandbox (a zygote-forked instance
  runs as a user that need not be able to load the interpreter again). The cost: state a hook
  file keeps outside the API (threads it started, globals it changed in other modules) is not
  undone; such a file can clean up in `on_terminate`.
- The error hooks (`on_record_after_{create,update,delete}_error`) are fed by one handler on
  each model hook, run first, that triggers them when the rest of the chain fails and then
  raises the failure again.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

from instance_runtime.core.app import App
from instance_runtime.core.events import Action, LifecycleEvent, RecordEvent
from instance_runtime.core.hooks import Event, Hook
from instance_runtime.hooks.app import app as hooks_app
from instance_runtime.hooks.events import BootstrapEvent, RecordErrorEvent
from instance_runtime.hooks.guard import original_error
from instance_runtime.hooks.registry import Binding, HooksState, Registry
from instance_runtime.hooks.routes import RouteTable

log = logging.getLogger("instance_runtime.hooks")

PACKAGE = "pb_hooks"
POLL_ENV = "PF_HOOKS_POLL_INTERVAL"
DEFAULT_POLL_INTERVAL = 1.0
_MAX_WATCHED = 2000
_ERROR_CATCHER_PRIORITY = -(2**31)
_NAME_CHARS = re.compile(r"[^0-9A-Za-z_]")

Snapshot = frozenset[tuple[str, int, int, int]]


# ---------------------------------------------------------------------------- modules
class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the source every time; never reads or writes bytecode in the tenant's folder."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        code: CodeType = self.source_to_code(self.get_data(path), path)
        return code


class _PackageLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        return None


class _Finder(importlib.abc.MetaPathFinder):
    """Finds `pb_hooks` (the folder, as a package) and the modules below it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == PACKAGE:
            spec = importlib.machinery.ModuleSpec(PACKAGE, _PackageLoader(), is_package=True)
            spec.submodule_search_locations = [str(self.root)]
            return spec
        if not fullname.startswith(PACKAGE + "."):
            return None
        parts = fullname.split(".")[1:]
        base = self.root.joinpath(*parts)
        package = base / "__init__.py"
        if package.is_file():
            return importlib.util.spec_from_file_location(
                fullname,
                package,
                loader=_SourceLoader(fullname, str(package)),
                submodule_search_locations=[str(base)],
            )
        if base.is_dir():  # a folder without __init__.py is a package too
            spec = importlib.machinery.ModuleSpec(fullname, _PackageLoader(), is_package=True)
            spec.submodule_search_locations = [str(base)]
            return spec
        module = base.with_name(base.name + ".py")
        if module.is_file():
            return importlib.util.spec_from_file_location(
                fullname, module, loader=_SourceLoader(fullname, str(module))
            )
        return None


def _install_finder(root: Path) -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
    sys.meta_path.insert(0, _Finder(root))


def _purge_modules() -> None:
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def hook_files(root: Path) -> list[Path]:
    """The hook files of `root`, in name order (see the module docstring)."""
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        Path(entry.path)
        for entry in entries
        if entry.name.endswith(".py") and not entry.name.startswith(("_", ".")) and entry.is_file()
    ]


def module_name(path: Path, taken: set[str]) -> str:
    name = f"{PACKAGE}.{_NAME_CHARS.sub('_', path.stem) or '_'}"
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}_{n}"
    taken.add(unique)
    return unique


def snapshot(root: Path) -> Snapshot:
    """What a change of the hooks is judged by (see the module docstring)."""
    found: set[tuple[str, int, int, int]] = set()
    pending = [root]
    while pending and len(found) < _MAX_WATCHED:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.name.endswith(".py"):
                    st = entry.stat()
                    found.add((entry.path, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                continue
    return frozenset(found)


# ---------------------------------------------------------------------------- loading
def load_files(state: HooksState) -> Registry:
    """Execute the hook files, staging what they register; returns the (inactive) registry."""
    root = state.hooks_dir
    registry = Registry()
    state.files, state.failed = [], []
    if root is None:
        return registry
    _purge_modules()
    _install_finder(root)
    taken: set[str] = set()
    for path in hook_files(root):
        name = module_name(path, taken)
        staged: list[Binding] = []
        state.staging = staged
        try:
            spec = importlib.util.spec_from_file_location(
                name, path, loader=_SourceLoader(name, str(path))
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # a file calling sys.exit() fails alone
            sys.modules.pop(name, None)
            state.failed.append(path.name)
            log.error("pb_hooks/%s failed to load; its hooks are not registered", path.name,
                      exc_info=exc)  # fmt: skip
            continue
        finally:
            state.staging = None
        registry.bindings.extend(staged)
        state.files.append(path.name)
    loaded = len(state.files)
    log.info("pb_hooks: %d file(s) loaded, %d failed", loaded, len(state.failed))
    return registry


def _trigger_alone(handlers: list[Callable[[Any], Any]], event: Event) -> None:
    """Run `handlers` as a chain of their own (one registry's lifecycle handlers)."""
    if not handlers:
        return
    hook: Hook[Event] = Hook()
    for fn in handlers:
        hook.bind(fn)
    try:
        hook.trigger(event, lambda e: None)
    except Exception:
        log.exception("pb_hooks: a lifecycle handler failed")


def _bootstrap(state: HooksState, registry: Registry, *, reload: bool) -> None:
    event = BootstrapEvent(hooks_app)
    try:
        if reload:
            _trigger_alone(registry.handlers(state.extras.on_bootstrap, state), event)
        else:
            state.extras.on_bootstrap.trigger(event, lambda e: None)
    except Exception:
        log.exception("pb_hooks: on_bootstrap failed")


def _error_catcher(
    error_hook: Hook[RecordErrorEvent], action: Action
) -> Callable[[RecordEvent], Any]:
    def catcher(e: RecordEvent) -> Any:
        try:
            return e.next()
        except Exception as exc:
            if len(error_hook):
                error = original_error(exc)
                failed = RecordErrorEvent(e.conn, e.collection, e.record, action, error)
                try:
                    error_hook.trigger(failed, lambda _e: None)
                except Exception:
                    log.exception("pb_hooks: an on_record_after_%s_error handler failed", action)
            raise

    return catcher


def _bind_error_catchers(state: HooksState) -> None:
    hooks, extras = state.runtime.hooks, state.extras
    pairs: tuple[tuple[Hook[RecordEvent], Hook[RecordErrorEvent], Action], ...] = (
        (hooks.on_record_create, extras.on_record_after_create_error, "create"),
        (hooks.on_record_update, extras.on_record_after_update_error, "update"),
        (hooks.on_record_delete, extras.on_record_after_delete_error, "delete"),
    )
    for model_hook, error_hook, action in pairs:
        model_hook.bind(
            _error_catcher(error_hook, action),
            id=f"pfHooksErrors_{action}",
            priority=_ERROR_CATCHER_PRIORITY,
        )


class Watcher:
    """Polls the hooks folder and reloads on a change (see the module docstring)."""

    def __init__(self, state: HooksState, interval: float, loaded: Snapshot) -> None:
        self.state = state
        self.interval = interval
        self.loaded = loaded
        self.task: asyncio.Task[None] | None = None
        self.reloads = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="pb_hooks-watch")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        root = self.state.hooks_dir
        assert root is not None
        previous = self.loaded
        while True:
            await asyncio.sleep(self.interval)
            current = snapshot(root)
            if current != self.loaded and current == previous:
                try:
                    await self.reload(current)
                except Exception:
                    log.exception("pb_hooks: reload failed")
                    self.loaded = current
            previous = current

    async def reload(self, seen: Snapshot | None = None) -> None:
        state, runtime = self.state, self.state.runtime
        root = state.hooks_dir
        assert root is not None
        log.info("pb_hooks changed: reloading")
        self.loaded = seen if seen is not None else snapshot(root)
        old = state.registry
        new = load_files(state)
        _trigger_alone(old.handlers(runtime.hooks.on_terminate, state), LifecycleEvent(runtime))

        def swap(conn: sqlite3.Connection) -> None:
            old.deactivate()
            new.activate(state)
            state.registry = new

        await runtime.db.write(swap)
        self.reloads += 1
        _bootstrap(state, new, reload=True)
        _trigger_alone(new.handlers(runtime.hooks.on_serve, state), LifecycleEvent(runtime))
        log.info("pb_hooks: reload done")


def _poll_interval() -> float:
    raw = os.environ.get(POLL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_POLL_INTERVAL
    except ValueError:
        log.warning("%s=%r is not a number; polling every %ss", POLL_ENV, raw,
                    DEFAULT_POLL_INTERVAL)  # fmt: skip
        return DEFAULT_POLL_INTERVAL
    return max(value, 0.05)


def install(runtime: App, hooks_dir: Path | None, *, watch: bool = True) -> RouteTable:
    """See the module docstring."""
    root = hooks_dir.absolute() if hooks_dir is not None else None
    state = HooksState(runtime, root)
    hooks_app._attach(state)
    watcher: Watcher | None = None
    if root is not None:
        _bind_error_catchers(state)
        loaded = snapshot(root)
        registry = load_files(state)
        registry.activate(state)
        state.registry = registry
        _bootstrap(state, registry, reload=False)
        if watch:
            watcher = Watcher(state, _poll_interval(), loaded)

    def serving(e: LifecycleEvent) -> Any:
        state.loop = asyncio.get_running_loop()
        if watcher is not None:
            watcher.start()
        return e.next()

    def terminating(e: LifecycleEvent) -> Any:
        if watcher is not None:
            watcher.stop()
        return e.next()

    runtime.hooks.on_serve.bind(serving, id="pfHooksServe", priority=-1000)
    runtime.hooks.on_terminate.bind(terminating, id="pfHooksTerminate", priority=1000)
    return state.routes
