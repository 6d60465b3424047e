"""What every driver asks of a started engine, and says when it fails: one GET of the engine's
health path (`HealthProbe`, one client per driver, no kept-alive connections), and the
`StartError` reason with the instance's last log lines (`failure_message`)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from control_plane.drivers.base import InstanceSpec

ERROR_LOG_LINES = 20  # of the instance's output in a failure's reason


def failure_message(spec: InstanceSpec, what: str, lines: Sequence[str]) -> str:
    tail = "\n".join(lines) if lines else "(empty)"
    engine = f"{spec.engine.name} {spec.version}"
    return f"instance {spec.id}: {engine} {what}; last log lines:\n{tail}"


class HealthProbe:
    """GETs of an instance's health path on its port (loopback unless told another host)."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    async def healthy(self, spec: InstanceSpec, timeout: float, host: str = "127.0.0.1") -> bool:
        """One GET of the engine's health path at `host`; True on 200."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
            )
        url = f"http://{host}:{spec.port}{spec.engine.health_path}"
        try:
            response = await self._client.get(url, timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
