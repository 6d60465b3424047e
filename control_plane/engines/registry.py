"""The engines this control plane can run, by name (`pocketbase`, later `pocketfleet`)."""

from __future__ import annotations

from collections.abc import Iterable

from control_plane.engines.base import Engine, EngineError
from control_plane.engines.pocketbase import PocketBaseEngine
from control_plane.engines.pocketfleet import PocketfleetEngine
from control_plane.settings import Settings


class EngineRegistry:
    """Engines by name. Drivers and services look engines up here and never by class."""

    def __init__(self, engines: Iterable[Engine] = ()) -> None:
        self._engines: dict[str, Engine] = {}
        for engine in engines:
            self.register(engine)

    def register(self, engine: Engine) -> None:
        """Add `engine`; a second engine with the same name is refused with `EngineError`."""
        if engine.name in self._engines:
            raise EngineError(f"engine {engine.name!r} is already registered")
        self._engines[engine.name] = engine

    def get(self, name: str) -> Engine:
        """The engine called `name`, or `EngineError` naming the known ones."""
        try:
            return self._engines[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise EngineError(f"unknown engine {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """Names of the registered engines, sorted."""
        return sorted(self._engines)


def default_registry(settings: Settings) -> EngineRegistry:
    """The registry of a control plane: PocketBase, with its bundled version installed.

    Blocking (may copy the bundled binary once); call it at startup or via `asyncio.to_thread`.
    """
    pocketbase = PocketBaseEngine(
        settings.engines_dir, settings.default_pocketbase_version, settings.request_log_max_days
    )
    pocketbase.ensure_bundled()
    return EngineRegistry([pocketbase, PocketfleetEngine()])
