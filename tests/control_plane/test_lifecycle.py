"""The lifecycle table and `transition()`, against a real (SQLite) control database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlmodel import select

from control_plane.db.engine import SessionFactory, create_engine, migrate, session_factory
from control_plane.db.models import Account, Instance, InstanceEvent
from control_plane.lifecycle import (
    ALLOWED_MOVES,
    IllegalTransition,
    InstanceState,
    can_move,
    transition,
)

S = InstanceState


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SessionFactory]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
    await migrate(url)
    engine = create_engine(url)
    yield session_factory(engine)
    await engine.dispose()


async def new_instance(db: SessionFactory) -> Instance:
    async with db() as session:
        account = Account(email="a@example.com", password_hash="x")
        session.add(account)
        await session.flush()
        instance = Instance(name="app", owner_id=account.id, engine="pocketbase", version="1")
        session.add(instance)
        await session.commit()
        return instance


def test_every_state_has_a_row_and_deleted_is_final() -> None:
    assert set(ALLOWED_MOVES) == set(InstanceState)
    assert ALLOWED_MOVES[S.DELETED] == frozenset()
    assert ALLOWED_MOVES[S.DELETING] == frozenset({S.DELETED})


@pytest.mark.parametrize("state", [s for s in InstanceState if s not in (S.DELETING, S.DELETED)])
def test_any_live_state_can_be_deleted_or_fail(state: InstanceState) -> None:
    assert can_move(state, S.DELETING)
    if state != S.FAILED:
        assert can_move(state, S.FAILED)


@pytest.mark.parametrize(
    ("current", "target"),
    [(S.STOPPED, S.RUNNING), (S.DELETED, S.RUNNING), (S.DELETING, S.RUNNING),
     (S.FAILED, S.RUNNING), (S.STOPPED, S.HIBERNATED)],
)  # fmt: skip
def test_moves_outside_the_table_are_refused(current: InstanceState, target: InstanceState) -> None:
    assert not can_move(current, target)


async def test_transition_records_an_event(db: SessionFactory) -> None:
    instance = await new_instance(db)
    async with db() as session:
        row = await session.get(Instance, instance.id)
        assert row is not None
        transition(session, row, S.RUNNING, actor="reconciler", reason="started")
        await session.commit()
    async with db() as session:
        row = await session.get(Instance, instance.id)
        events = (await session.exec(select(InstanceEvent))).all()
    assert row is not None and row.status == "running"
    assert [(e.from_state, e.to_state, e.actor, e.reason) for e in events] == [
        ("provisioning", "running", "reconciler", "started")
    ]


async def test_an_illegal_transition_changes_nothing(db: SessionFactory) -> None:
    instance = await new_instance(db)
    async with db() as session:
        row = await session.get(Instance, instance.id)
        assert row is not None
        transition(session, row, S.STOPPED, actor="t")
        with pytest.raises(IllegalTransition):
            transition(session, row, S.HIBERNATED, actor="t")
        assert row.status == "stopped"


async def test_a_move_to_the_same_state_only_updates_the_reason(db: SessionFactory) -> None:
    instance = await new_instance(db)
    async with db() as session:
        row = await session.get(Instance, instance.id)
        assert row is not None
        transition(session, row, S.PROVISIONING, actor="t", reason="retrying")
        await session.commit()
        assert row.status_reason == "retrying"
        assert (await session.exec(select(InstanceEvent))).all() == []
