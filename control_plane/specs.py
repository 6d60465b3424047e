"""From a row of the control DB to what a driver runs: `InstanceSpec`."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from control_plane.db.models import Instance
from control_plane.drivers.base import InstanceSpec
from control_plane.engines.base import InstanceLayout
from control_plane.engines.registry import EngineRegistry
from control_plane.limits import max_processes_of
from control_plane.settings import Settings

# The variable that tells an engine where to report its activity (instance_runtime.activity)
ACTIVITY_SOCKET_ENV = "PF_ACTIVITY_SOCKET"
# The variable that tells an engine to leave checkpoints to Litestream (instance_runtime.core.db)
CHECKPOINTS_ENV = "PF_CHECKPOINTS"


def instance_layout(settings: Settings, instance_id: str) -> InstanceLayout:
    return _layout(settings.instances_dir, instance_id)


@lru_cache(maxsize=16384)
def _layout(instances_dir: Path, instance_id: str) -> InstanceLayout:
    """Resolved once per instance (a `resolve()` is a system call per path component, and the
    reconciler builds every running instance's spec at every pass)."""
    return InstanceLayout((instances_dir / instance_id).resolve())


def spec_for(settings: Settings, engines: EngineRegistry, instance: Instance) -> InstanceSpec:
    assert instance.port is not None, "every live instance has a port"
    engine = engines.get(instance.engine)
    env = dict(instance.env)
    platform_env: dict[str, str] = {}
    if engine.reports_activity:
        platform_env[ACTIVITY_SOCKET_ENV] = str(settings.activity_socket)
    if engine.leaves_checkpoints and settings.replication:
        platform_env[CHECKPOINTS_ENV] = "external"
    return InstanceSpec(
        id=instance.id,
        name=instance.name or instance.former_name,
        engine=engine,
        version=instance.version,
        layout=instance_layout(settings, instance.id),
        port=instance.port,
        uid=instance.uid if os.geteuid() == 0 and settings.instance_users else None,
        env=env,
        platform_env=platform_env,
        memory_limit_mb=settings.instance_memory_limit_mb,
        max_open_files=settings.instance_max_open_files,
        log_max_bytes=settings.instance_log_max_bytes,
        max_processes=max_processes_of(settings, instance),
        cpu_weight=settings.instance_cpu_weight,
        node=instance.node,
    )
