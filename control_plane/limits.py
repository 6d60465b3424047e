"""An instance's effective limits (fleet defaults, or an operator's per-instance overrides) and
where its disk usage stands against its quota. Pure functions of a row and the settings.

- Processes: `Instance.max_processes`, else `PF_INSTANCE_MAX_PROCESSES` (applied by the driver
  at start, `RLIMIT_NPROC` on the instance's own uid).
- Disk: `Instance.disk_limit_mb`, else `PF_INSTANCE_DISK_LIMIT_MB`; `0` means no quota. The
  usage is the last measurement (`Instance.disk_bytes`, see `control_plane.disk_usage` and
  `control_plane.services.limits`). A measurement that stopped at its bounds
  (`disk_complete=False`) counts as over the quota.
- States: `unknown` (not measured yet), `ok`, `warning` (at `PF_INSTANCE_DISK_WARN_PERCENT` of
  the quota or more), `over` (past the quota: the instance is stopped and refused a start).
"""

from __future__ import annotations

from enum import StrEnum

from control_plane.db.models import Instance
from control_plane.settings import Settings

MB = 1024 * 1024
# `desired_by` of an instance stopped for being over its disk quota (the reconciler's reason
# for such a stop says so, with the figures)
QUOTA_ACTOR = "scheduler:disk-quota"


class DiskState(StrEnum):
    UNKNOWN = "unknown"
    OK = "ok"
    WARNING = "warning"
    OVER = "over"


def max_processes_of(settings: Settings, instance: Instance) -> int:
    return instance.max_processes or settings.instance_max_processes


def disk_limit_mb_of(settings: Settings, instance: Instance) -> int | None:
    """The instance's disk quota in MB (1 MB = 2^20 bytes), or None when it has none."""
    limit = (
        instance.disk_limit_mb
        if instance.disk_limit_mb is not None
        else settings.instance_disk_limit_mb
    )
    return limit or None


def disk_state(settings: Settings, instance: Instance) -> DiskState:
    if instance.disk_bytes is None:
        return DiskState.UNKNOWN
    limit_mb = disk_limit_mb_of(settings, instance)
    if limit_mb is None:
        return DiskState.OK
    limit = limit_mb * MB
    if instance.disk_bytes > limit or instance.disk_complete is False:
        return DiskState.OVER
    if instance.disk_bytes * 100 >= limit * settings.instance_disk_warn_percent:
        return DiskState.WARNING
    return DiskState.OK


def over_quota_reason(settings: Settings, instance: Instance) -> str | None:
    """`over its disk quota: 1.2 GB of 1 GB` when the instance is over its quota, else None."""
    if disk_state(settings, instance) != DiskState.OVER:
        return None
    limit_mb = disk_limit_mb_of(settings, instance) or 0
    used = human_bytes(instance.disk_bytes or 0)
    if instance.disk_complete is False:
        return (
            f"over its disk quota: more than {settings.disk_usage_max_entries} files and "
            f"folders (or folders nested too deep) to measure; at least {used} of "
            f"{human_bytes(limit_mb * MB)}"
        )
    return f"over its disk quota: {used} of {human_bytes(limit_mb * MB)}"


def quota_stop_reason(settings: Settings, instance: Instance) -> str:
    """Why an instance the quota stopped is stopped (for its status reason)."""
    return over_quota_reason(settings, instance) or "stopped: it was over its disk quota"


def human_bytes(value: int) -> str:
    """`512 B`, `3.4 MB`, `1.2 GB`, `1 GB`: binary units, one decimal, no trailing `.0`."""
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            text = f"{size:.0f}" if unit == "B" else f"{size:.1f}".removesuffix(".0")
            return f"{text} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
