"""The instance lifecycle: one state machine, one table of allowed moves, one `transition()`.

    provisioning -> running <-> hibernated
    running -> stopped -> provisioning
    any -> failed (with a reason) -> provisioning | stopped
    any -> deleting -> deleted

Every move is recorded as an `InstanceEvent` row (time, actor, reason). Nothing else assigns
`Instance.status`.
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel.ext.asyncio.session import AsyncSession

from control_plane.db.models import Instance, InstanceEvent, utcnow


class InstanceState(StrEnum):
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPED = "stopped"
    HIBERNATED = "hibernated"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


S = InstanceState

ALLOWED_MOVES: dict[InstanceState, frozenset[InstanceState]] = {
    S.PROVISIONING: frozenset({S.RUNNING, S.STOPPED, S.FAILED, S.DELETING}),
    S.RUNNING: frozenset({S.PROVISIONING, S.STOPPED, S.HIBERNATED, S.FAILED, S.DELETING}),
    S.HIBERNATED: frozenset({S.PROVISIONING, S.RUNNING, S.STOPPED, S.FAILED, S.DELETING}),
    S.STOPPED: frozenset({S.PROVISIONING, S.FAILED, S.DELETING}),
    S.FAILED: frozenset({S.PROVISIONING, S.STOPPED, S.DELETING}),
    S.DELETING: frozenset({S.DELETED}),
    S.DELETED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, current: InstanceState, target: InstanceState) -> None:
        super().__init__(f"an instance cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_move(current: InstanceState, target: InstanceState) -> bool:
    return target in ALLOWED_MOVES[current]


def transition(
    session: AsyncSession,
    instance: Instance,
    target: InstanceState,
    *,
    actor: str,
    reason: str = "",
) -> InstanceEvent:
    """Move `instance` to `target`, recording the event in `session` (the caller commits).

    Raises `IllegalTransition` for a move the table does not allow. A move to the current
    state only refreshes the reason, and records nothing.
    """
    current = InstanceState(instance.status)
    now = utcnow()
    if current == target:
        instance.status_reason = reason
        instance.updated_at = now
        session.add(instance)
        return InstanceEvent(
            instance_id=instance.id, from_state=current, to_state=target, actor=actor, reason=reason
        )
    if not can_move(current, target):
        raise IllegalTransition(current, target)
    instance.status = target.value
    instance.status_reason = reason
    instance.updated_at = now
    event = InstanceEvent(
        instance_id=instance.id,
        at=now,
        from_state=current.value,
        to_state=target.value,
        actor=actor,
        reason=reason,
    )
    session.add(instance)
    session.add(event)
    return event
