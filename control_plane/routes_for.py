"""The route of an instance, from its row in the control DB and where its driver reaches it.

`route_for(settings, driver, instance, up)`: `None` for an instance without a name (deleted);
`UP` to `Upstream(driver.address(id, node), port)` while it runs (or when `up` says so); else
`ASLEEP` (hibernated: a request wakes it) or `STOPPED`, with the reason clients are told. The
upstream's host is the driver's (`Driver.address`): 127.0.0.1 on one machine, the address of
the instance's node on a swarm, which both the embedded proxy and Caddy dial.
"""

from __future__ import annotations

from control_plane.db.models import Instance
from control_plane.drivers.base import Driver
from control_plane.lifecycle import InstanceState
from control_plane.settings import Settings
from proxy.routes import Route, RouteState, Upstream


def upstream_for(driver: Driver, instance: Instance, port: int) -> Upstream:
    """Where the proxy dials `instance`, on `port`."""
    return Upstream(driver.address(instance.id, instance.node), port)


def route_for(
    settings: Settings, driver: Driver, instance: Instance, up: bool | None = None
) -> Route | None:
    if not instance.name:
        return None
    host = settings.instance_host(instance.name)
    running = instance.status == InstanceState.RUNNING if up is None else up
    if running and instance.port is not None:
        upstream = upstream_for(driver, instance, instance.port)
        return Route(host, instance.id, RouteState.UP, upstream)
    state = RouteState.ASLEEP if instance.status == InstanceState.HIBERNATED else RouteState.STOPPED
    reason = f"Instance {instance.name} is {instance.status}."
    return Route(host, instance.id, state, None, reason)
