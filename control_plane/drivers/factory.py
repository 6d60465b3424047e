"""The driver a control plane runs its instances with: `PF_DRIVER` (`process`, the default,
`docker` or `swarm`). Callers get a `Driver` and never name a driver's class."""

from __future__ import annotations

from control_plane.drivers.base import Driver
from control_plane.settings import Settings


def make_driver(settings: Settings) -> Driver:
    """A new driver object for `settings.driver` (cheap: nothing is contacted yet)."""
    if settings.driver == "swarm":
        from control_plane.drivers.swarm import SwarmDriver

        return SwarmDriver(settings)
    if settings.driver == "docker":
        from control_plane.drivers.docker import DockerDriver  # the docker SDK only when used

        return DockerDriver(settings)
    from control_plane.drivers.process import ProcessDriver

    return ProcessDriver(settings)
