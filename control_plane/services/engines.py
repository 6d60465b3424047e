"""Engines as the API offers them: list what is installed, install another version."""

from __future__ import annotations

import asyncio

from control_plane.engines.base import EngineError
from control_plane.engines.registry import EngineRegistry
from control_plane.schemas import EnginePublic
from control_plane.services.errors import BadRequest, NotFound


class EngineService:
    def __init__(self, engines: EngineRegistry) -> None:
        self.engines = engines
        self._installing = asyncio.Lock()

    def list_engines(self) -> list[EnginePublic]:
        return [
            EnginePublic(
                name=name,
                default_version=self.engines.get(name).default_version(),
                versions=self.engines.get(name).installed_versions(),
            )
            for name in self.engines.names()
        ]

    async def install(self, engine_name: str, version: str) -> EnginePublic:
        try:
            engine = self.engines.get(engine_name)
        except EngineError as exc:
            raise NotFound(str(exc), field="engine") from exc
        async with self._installing:
            try:
                await asyncio.to_thread(engine.install, version)
            except EngineError as exc:
                raise BadRequest(str(exc), field="version") from exc
        return EnginePublic(
            name=engine_name,
            default_version=engine.default_version(),
            versions=engine.installed_versions(),
        )
