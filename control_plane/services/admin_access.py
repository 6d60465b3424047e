""" "Open admin": sign an instance's owner into its admin UI without showing any password.

For each request the control plane upserts a service superuser with a fresh random password
(the engine's `superuser_task`, run by the driver like any one-off task of the instance),
signs in as it against the instance to get a superuser token, and leaves that token in the
proxy's `HandoffStore` under a single-use code. The browser follows a link to the instance's
own host, where the proxy redeems the code once: the admin UI's storage gets the token, and
the browser lands on the admin UI signed in. The password is never stored or shown; the next
"open admin" replaces it (which also ends the admin sessions it opened).
"""

from __future__ import annotations

import asyncio
import secrets

import httpx

from control_plane.db.models import Account
from control_plane.drivers.base import Driver
from control_plane.engines.registry import EngineRegistry
from control_plane.lifecycle import InstanceState
from control_plane.services.errors import Conflict, Unavailable
from control_plane.services.instances import InstanceService
from control_plane.settings import Settings
from control_plane.specs import spec_for
from proxy.handoff import HANDOFF_PATH, HandoffStore

SERVICE_SUPERUSER = "dashboard@pocketfleet.invalid"
_AUTH_PATH = "/api/collections/_superusers/auth-with-password"
_SIGN_IN_RETRY_S = 5.0  # a refused connection is tried again this long (see `_sign_in`)


class AdminAccessService:
    def __init__(
        self,
        settings: Settings,
        instances: InstanceService,
        engines: EngineRegistry,
        driver: Driver,
        handoffs: HandoffStore,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.instances = instances
        self.engines = engines
        self.driver = driver
        self.handoffs = handoffs
        self._transport = transport
        self._locks: dict[str, asyncio.Lock] = {}

    async def admin_link(self, account: Account, name: str) -> str:
        """A single-use link (valid for about a minute) that opens the admin UI of `name`
        signed in as superuser. 409 when the instance is not running, 503 when it does not
        accept the sign-in."""
        instance = await self.instances.get(account, name)
        if instance.status != InstanceState.RUNNING or instance.port is None:
            raise Conflict(f"{name} is {instance.status}; start it to open its admin")
        spec = spec_for(self.settings, self.engines, instance)
        lock = self._locks.setdefault(instance.id, asyncio.Lock())
        async with lock:
            password = secrets.token_urlsafe(24)
            task = spec.engine.superuser_task(
                spec.version, spec.layout, SERVICE_SUPERUSER, password
            )
            code, output = await self.driver.run_task(spec, task.argv, task.env)
            if code != 0:
                raise Unavailable(f"could not prepare the admin sign-in: {output[-300:]}")
            answer = await self._sign_in(account, name, instance.port, password)
        if answer.status_code != 200:
            raise Unavailable(f"{name} refused the sign-in ({answer.status_code})")
        body = answer.json()
        storage = spec.engine.admin_auth_storage(body["token"], body["record"])
        handoff = self.handoffs.issue(
            self.settings.instance_host(name), storage, spec.engine.admin_path
        )
        return f"{self.settings.instance_url(name)}{HANDOFF_PATH}?code={handoff}"

    async def _sign_in(
        self, account: Account, name: str, port: int, password: str
    ) -> httpx.Response:
        """The service superuser's sign-in at the instance. A refused connection is tried again
        for a few seconds, at the port the control DB gives then: the instance may be moving
        to another port (one found taken) or finishing a restart the reconciler began."""
        deadline = asyncio.get_running_loop().time() + _SIGN_IN_RETRY_S
        async with httpx.AsyncClient(
            transport=self._transport, timeout=15, trust_env=False
        ) as client:
            while True:
                try:
                    return await client.post(
                        f"http://127.0.0.1:{port}{_AUTH_PATH}",
                        json={"identity": SERVICE_SUPERUSER, "password": password},
                    )
                except httpx.ConnectError as exc:
                    if asyncio.get_running_loop().time() >= deadline:
                        raise Unavailable(f"{name} did not answer the sign-in: {exc}") from exc
                except httpx.HTTPError as exc:
                    raise Unavailable(f"{name} did not answer the sign-in: {exc}") from exc
                await asyncio.sleep(0.2)
                instance = await self.instances.get(account, name)
                if instance.status != InstanceState.RUNNING or instance.port is None:
                    raise Unavailable(f"{name} is {instance.status}; start it to open its admin")
                port = instance.port
