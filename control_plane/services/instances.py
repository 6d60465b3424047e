"""Instances: create, read, change and delete — by writing desired state.

Nothing here starts or stops a process: the service records what the owner wants, nudges the
reconciler, and (for start/stop/delete) waits until reality has caught up.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from control_plane.db.engine import SessionFactory, serialized
from control_plane.db.models import Account, Instance
from control_plane.drivers.base import Driver
from control_plane.engines.base import EngineError
from control_plane.engines.registry import EngineRegistry
from control_plane.env_rules import EnvProblem, describe, env_problems
from control_plane.env_rules import refused_env_name as refused_env_name  # for drivers, too
from control_plane.lifecycle import InstanceState, transition
from control_plane.names import name_problem
from control_plane.schemas import EnvVarPublic, InstanceCreate, InstanceUpdate
from control_plane.services.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound
from control_plane.services.limits import LimitsService
from control_plane.settings import Settings
from control_plane.specs import spec_for

# what a masked value shows: no character of it, and only a rough idea of its length
MASK = "••••••••"
_LENGTH_CLASS_BOUNDS = (8, 16, 32, 64, 256, 1024)
LIVE = col(Instance.status) != InstanceState.DELETED.value


class Reconcile(Protocol):
    """What services need of the reconciler: a nudge, and ways to wait for it."""

    def nudge(self) -> None: ...

    def wait_settled(self, instance_id: str, timeout: float) -> Awaitable[None]: ...

    def next_change(self) -> asyncio.Event: ...


def actor_of(account: Account) -> str:
    return f"{'operator' if account.is_operator else 'account'}:{account.id}"


def length_class(value: str) -> str:
    """How long `value` is, roughly: "empty", "1–8 characters", "9–16 characters", ...,
    "over 1024 characters" (its exact length is not shown either)."""
    if not value:
        return "empty"
    low = 1
    for high in _LENGTH_CLASS_BOUNDS:
        if len(value) <= high:
            return f"{low}–{high} characters"
        low = high + 1
    return f"over {_LENGTH_CLASS_BOUNDS[-1]} characters"


def _refusal(problems: list[EnvProblem], *, one_var: bool = False) -> Invalid:
    """The problems as one 422: on `vars`, or for one variable on the field ("key" or
    "value") the problems are about."""
    concerns = {problem.concern for problem in problems}
    field = "vars"
    if one_var and concerns & {"name", "value"}:
        field = "key" if "name" in concerns else "value"
    return Invalid(describe(problems), field=field)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class InstanceService:
    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        engines: EngineRegistry,
        driver: Driver,
        reconciler: Reconcile,
    ) -> None:
        self.settings = settings
        self.db = db
        self.engines = engines
        self.driver = driver
        self.reconciler = reconciler
        self.limits = LimitsService(settings, db, reconciler)  # disk quota, operators' limits

    # ----- reading

    async def _owned(self, session: AsyncSession, account: Account, name: str) -> Instance:
        """The caller's live instance `name`; another account's instance is 404, never 403."""
        instance = (await session.exec(select(Instance).where(Instance.name == name, LIVE))).first()
        if instance is None or (instance.owner_id != account.id and not account.is_operator):
            raise NotFound(f"you have no instance named {name!r}")
        return instance

    async def get(self, account: Account, name: str) -> Instance:
        async with self.db.read() as session:
            return await self._owned(session, account, name)

    async def list_owned(self, account: Account) -> Sequence[Instance]:
        async with self.db.read() as session:
            rows = await session.exec(
                select(Instance)
                .where(Instance.owner_id == account.id, LIVE)
                .order_by(col(Instance.created_at))
            )
            return rows.all()

    async def fleet(self) -> Sequence[tuple[Instance, Account]]:
        async with self.db.read() as session:
            rows = await session.exec(
                select(Instance, Account)
                .join(Account, col(Account.id) == col(Instance.owner_id))
                .where(LIVE)
                .order_by(col(Instance.created_at))
            )
            return rows.all()

    def quota_of(self, account: Account) -> int:
        """How many live instances `account` may have."""
        return account.quota if account.quota is not None else self.settings.default_quota

    async def name_unavailable(self, name: str) -> str | None:
        """Why `name` cannot be used for a new instance now (invalid or taken), or None."""
        problem = name_problem(name)
        if problem:
            return f"instance name {problem}"
        async with self.db.read() as session:
            taken = await session.exec(select(Instance.id).where(Instance.name == name))
            if taken.first() is not None:
                return f"the name {name!r} is taken; pick another"
        return None

    # ----- creating

    def _check_version(self, engine_name: str, version: str | None) -> str:
        try:
            engine = self.engines.get(engine_name)
        except EngineError as exc:
            raise Invalid(str(exc), field="engine") from exc
        version = version or engine.default_version()
        if not engine.is_installed(version):
            installed = ", ".join(engine.installed_versions()) or "none"
            raise BadRequest(
                f"{engine_name} {version} is not installed (installed: {installed}); "
                "an operator can add it with `pocketfleet engines install`",
                field="version",
            )
        return version

    async def _allocate(self, session: AsyncSession) -> tuple[int, int]:
        """A port no instance holds and nothing listens on, and a never-used uid."""
        taken = set(
            (await session.exec(select(Instance.port).where(col(Instance.port).is_not(None)))).all()
        )
        low, high = self.settings.instance_port_range
        port = next((p for p in range(low, high + 1) if p not in taken and _port_is_free(p)), None)
        if port is None:
            raise Conflict("this server has no free port left for another instance")
        last_uid = (await session.exec(select(func.max(Instance.uid)))).one()
        uid = max(last_uid or 0, self.settings.instance_uid_base) + 1
        return port, uid

    async def create(self, account: Account, data: InstanceCreate) -> Instance:
        engine_name = data.engine or self.settings.default_engine
        version = self._check_version(engine_name, data.version)
        async with self.db() as session:
            # the count, the name, the port and the uid are read, then the row written: one
            # create at a time (SQLite's writer is alone already; on PostgreSQL, a lock)
            await serialized(session, "instances:create")
            quota = self.quota_of(account)
            owned = (
                await session.exec(
                    select(func.count())
                    .select_from(Instance)
                    .where(Instance.owner_id == account.id, LIVE)
                )
            ).one()
            if owned >= quota:
                raise Forbidden(
                    f"your account may have {quota} instances; delete one to create another"
                )
            exists = await session.exec(select(Instance.id).where(Instance.name == data.name))
            if exists.first() is not None:
                raise Conflict(f"the name {data.name!r} is taken; pick another", field="name")
            port, uid = await self._allocate(session)
            instance = Instance(
                name=data.name,
                former_name=data.name,
                owner_id=account.id,
                desired_by=actor_of(account),
                engine=engine_name,
                version=version,
                port=port,
                uid=uid,
                pending_superuser=(
                    {"email": account.email, "password": data.superuser_password}
                    if data.superuser_password
                    else None
                ),
            )
            session.add(instance)
            await session.flush()
            transition(
                session,
                instance,
                InstanceState.PROVISIONING,
                actor=actor_of(account),
                reason="created",
            )
            try:
                await session.commit()
            except IntegrityError as exc:
                raise Conflict(
                    f"the name {data.name!r} is taken; pick another", field="name"
                ) from exc
        self.reconciler.nudge()
        return instance

    # ----- changing

    async def update(self, account: Account, name: str, data: InstanceUpdate) -> Instance:
        async with self.db() as session:
            instance = await self._owned(session, account, name)
            fields = data.model_fields_set
            if "version" in fields and data.version and data.version != instance.version:
                instance.version = self._check_version(instance.engine, data.version)
                instance.generation += 1
            if "idle_timeout_s" in fields:
                instance.idle_timeout_s = data.idle_timeout_s
            session.add(instance)
            await session.commit()
        self.reconciler.nudge()
        await self.reconciler.wait_settled(instance.id, self.settings.start_timeout_s)
        return await self.get(account, name)

    async def _set_desired(self, account: Account, name: str, desired: str) -> Instance:
        async with self.db() as session:
            instance = await self._owned(session, account, name)
            instance.desired = desired
            instance.desired_by = actor_of(account)
            if desired == "running" and instance.status == InstanceState.FAILED:
                instance.crash_count = 0
                instance.next_start_at = None
                transition(
                    session,
                    instance,
                    InstanceState.PROVISIONING,
                    actor=actor_of(account),
                    reason="start requested",
                )
            session.add(instance)
            await session.commit()
        self.reconciler.nudge()
        await self.reconciler.wait_settled(instance.id, self.settings.start_timeout_s)
        return await self.get(account, name)

    async def start(self, account: Account, name: str) -> Instance:
        await self.limits.check_may_start(await self.get(account, name))  # 409 over its quota
        return await self._set_desired(account, name, "running")

    async def stop(self, account: Account, name: str) -> Instance:
        return await self._set_desired(account, name, "stopped")

    async def set_env(self, account: Account, name: str, env: dict[str, str]) -> Instance:
        """Replace the instance's variables by `env` (a restart applies them). 422 naming each
        refused variable and why (`control_plane.env_rules`); nothing is stored then."""
        problems = env_problems(env)
        if problems:
            raise _refusal(problems)
        return await self._store_env(account, name, lambda _stored: dict(env))

    async def set_env_var(self, account: Account, name: str, key: str, value: str) -> Instance:
        """Add or replace one variable, keeping the others (even one a newer rule refuses: it
        is not passed to the instance, and its owner can remove it). 422 with `field` "key" or
        "value" for a refused name or value."""

        def changed(stored: dict[str, str]) -> dict[str, str]:
            env = {**stored, key: value}
            problems = env_problems(env, only=[key])
            if problems:
                raise _refusal(problems, one_var=True)
            return env

        return await self._store_env(account, name, changed)

    async def unset_env_var(self, account: Account, name: str, key: str) -> Instance:
        """Remove one variable (absent: nothing changes)."""
        return await self._store_env(
            account, name, lambda stored: {k: v for k, v in stored.items() if k != key}
        )

    async def _store_env(
        self, account: Account, name: str, change: Callable[[dict[str, str]], dict[str, str]]
    ) -> Instance:
        """Apply `change` to the stored variables in one transaction (sealed at rest by the
        column type, control_plane.db.sealed); a change bumps the generation (a restart)."""
        async with self.db() as session:
            instance = await self._owned(session, account, name)
            env = change(dict(instance.env))
            if instance.env != env:
                instance.env = env
                instance.generation += 1
                session.add(instance)
                await session.commit()
        self.reconciler.nudge()
        return instance

    def env_public(self, instance: Instance) -> list[EnvVarPublic]:
        """The variables, masked: no character of a value, only its length class; a variable
        a rule refuses (stored before the rule) says why it is not passed to the instance."""
        return [
            EnvVarPublic(
                name=key,
                preview=MASK,
                length_class=length_class(value),
                refused=refused_env_name(key),
            )
            for key, value in sorted(instance.env.items())
        ]

    async def logs(self, account: Account, name: str, tail: int) -> list[str]:
        instance = await self.get(account, name)
        return self.driver.read_logs(spec_for(self.settings, self.engines, instance), tail)

    async def delete(self, account: Account, name: str, *, purge: bool) -> None:
        async with self.db() as session:
            instance = await self._owned(session, account, name)
            instance.desired = "deleted"
            instance.desired_by = actor_of(account)
            instance.purge = purge
            transition(
                session,
                instance,
                InstanceState.DELETING,
                actor=actor_of(account),
                reason="purge requested" if purge else "delete requested",
            )
            await session.commit()
        self.reconciler.nudge()
        await self.reconciler.wait_settled(instance.id, self.settings.stop_timeout_s + 10)
