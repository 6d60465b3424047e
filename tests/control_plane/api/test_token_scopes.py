"""API tokens of scope deploy (issue 14: CI deploys with only `PF_URL` and `PF_TOKEN`), against
one real server (SQLite): a deploy token deploys to and reads the instances it opens and is
refused (403) everywhere else; another instance, the account's or another account's, is the
404 of an unknown one; refusals of bad token bodies (422); full tokens unchanged; revoking;
the CLI; and migration 0012 on both control-database backends (existing rows become full)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from control_plane.db.engine import alembic_config
from control_plane.db.models import ApiToken
from tests.support.postgres import PostgresServer
from tests.support.server import BIN, ServeProcess, running_server, sign_up

DEPLOY_ONLY = "this token may only deploy (scope deploy)"
GZIP = {"Content-Type": "application/gzip"}


def deploy_route(method: str, path: str) -> bool:
    """The operations a deploy token may use (`DeployAccount`): reading its instance, every
    route of its deploys, and revoking itself."""
    instance = "/api/instances/{name}"
    if (method, path) in (("get", instance), ("delete", "/api/sessions/current")):
        return True
    return path.startswith(instance + "/deploys")


_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 1000}x{next(_ids)}"


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    with running_server(env={"PF_FIRST_ACCOUNT_IS_OPERATOR": "true"}) as server:
        yield server


class Person:
    """A signed-up account: `api` carries its session."""

    def __init__(self, serve: ServeProcess, email: str) -> None:
        self.serve = serve
        self.api = serve.client()
        self.api.headers["Authorization"] = f"Bearer {sign_up(self.api, email)}"

    def instance(self) -> str:
        """A new instance, stopped (deploys to it switch the folders, `started` false)."""
        name = unique("scope")
        assert self.api.post("/api/instances", json={"name": name}).status_code == 201
        stopped = self.api.post(f"/api/instances/{name}/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped", stopped.text
        return name

    def token(self, **body: Any) -> dict[str, Any]:
        created = self.api.post("/api/tokens", json={"name": "ci", **body})
        assert created.status_code == 201, created.text
        row: dict[str, Any] = created.json()
        return row

    def as_token(self, row: dict[str, Any]) -> httpx.Client:
        return self.serve.client(row["token"])


@dataclass
class World:
    operator: Person  # the first account: an operator
    owner: Person
    other: Person
    a: str  # the owner's
    b: str  # the owner's
    c: str  # the other account's
    deploy_a: dict[str, Any]  # the owner's deploy token for `a` only


@pytest.fixture(scope="module")
def world(serve: ServeProcess) -> Iterator[World]:
    operator = Person(serve, "scopes-operator@example.com")
    owner = Person(serve, "scopes-owner@example.com")
    other = Person(serve, "scopes-other@example.com")
    assert operator.api.get("/api/accounts/me").json()["is_operator"] is True
    a, b, c = owner.instance(), owner.instance(), other.instance()
    yield World(operator, owner, other, a, b, c, owner.token(scope="deploy", instances=[a]))
    for person in (operator, owner, other):
        person.api.close()


def archive(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel, body in files.items():
            data = body.encode()
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def refused_as_unknown(world: World, response: httpx.Response, name: str) -> None:
    """`response` is exactly the 404 an instance that does not exist gets."""
    ghost = unique("ghost")
    unknown = world.owner.api.get(f"/api/instances/{ghost}")
    assert unknown.status_code == 404
    assert response.status_code == 404, response.text
    assert response.json() == json.loads(unknown.text.replace(ghost, name))


# ----- creating and listing


def test_a_deploy_token_shows_its_scope_and_instances(world: World) -> None:
    row = world.deploy_a
    assert row["scope"] == "deploy" and row["instances"] == [world.a]
    assert row["token"].startswith("pf_")
    every = world.owner.token(scope="deploy")
    assert every["scope"] == "deploy" and every["instances"] is None
    full = world.owner.token()
    assert full["scope"] == "full" and full["instances"] is None
    listed = {t["id"]: t for t in world.owner.api.get("/api/tokens").json()}
    assert listed[row["id"]]["scope"] == "deploy" and listed[row["id"]]["instances"] == [world.a]
    assert listed[every["id"]]["instances"] is None
    assert listed[full["id"]]["scope"] == "full"
    assert all("token" not in t for t in listed.values())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "full", "instances": ["x"]}, "instances"),  # instances: deploy only
        ({"instances": ["x"]}, "instances"),  # the default scope is full
        ({"scope": "deploy", "instances": []}, "instances"),  # at least one
        ({"scope": "deploy", "instances": ["a"] * 101}, "instances"),  # at most 100
        ({"scope": "deploy", "instances": [7]}, "instances.0"),
        ({"scope": "admin"}, "scope"),
        ({"scope": None}, "scope"),
        ({"name": "", "scope": "deploy"}, "name"),
    ],
)
def test_bad_token_bodies_are_422(world: World, body: dict[str, Any], field: str) -> None:
    before = len(world.owner.api.get("/api/tokens").json())
    refused = world.owner.api.post("/api/tokens", json={"name": "ci", **body})
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == field
    assert len(world.owner.api.get("/api/tokens").json()) == before


def test_instances_not_ones_own_are_refused_in_the_same_words(world: World) -> None:
    def refusal(*names: str) -> dict[str, Any]:
        body = {"name": "ci", "scope": "deploy", "instances": list(names)}
        refused = world.owner.api.post("/api/tokens", json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "instances"
        found: dict[str, Any] = refused.json()
        return found

    ghost = unique("ghost")
    unknown = refusal(world.a, ghost)
    assert unknown["detail"] == f"you have no instance named {ghost!r}"
    elsewhere = refusal(world.a, world.c)  # another account's: the same refusal
    assert elsewhere == json.loads(json.dumps(unknown).replace(ghost, world.c))
    assert refusal("../etc")["detail"] == "you have no instance named like that"  # no echo
    # an operator's deploy token opens the operator's own instances only
    operator = world.operator.api.post(
        "/api/tokens", json={"name": "ci", "scope": "deploy", "instances": [world.c]}
    )
    assert operator.status_code == 422 and operator.json()["detail"] == elsewhere["detail"]


# ----- what a deploy token may do


def test_a_deploy_token_deploys_and_reads_its_instance(world: World) -> None:
    with world.owner.as_token(world.deploy_a) as ci:
        shown = ci.get(f"/api/instances/{world.a}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["name"] == world.a
        done = ci.post(
            f"/api/instances/{world.a}/deploys",
            content=archive({"pb_public/index.html": "from ci"}),
            headers=GZIP,
        )
        assert done.status_code == 201, done.text
        assert done.json()["status"] == "done" and done.json()["started"] is False
        listed = ci.get(f"/api/instances/{world.a}/deploys")
        assert listed.status_code == 200 and listed.json()[0]["id"] == done.json()["id"]
        one = ci.get(f"/api/instances/{world.a}/deploys/{done.json()['id']}")
        assert one.status_code == 200 and one.json()["id"] == done.json()["id"]


def test_a_deploy_token_is_refused_every_other_route(serve: ServeProcess, world: World) -> None:
    """Every operation of the OpenAPI document that takes a bearer token, on the token's own
    instance, except the deploy routes: 403, before any body is read."""
    with serve.client() as anonymous:
        document = anonymous.get("/openapi.json").json()
    values = {"name": world.a, "token_id": world.deploy_a["id"]}
    checked = 0
    with world.owner.as_token(world.deploy_a) as ci:
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                if "security" not in operation or deploy_route(method, path):
                    continue
                url = path
                for param in operation.get("parameters", []):
                    if param["in"] == "path":
                        url = url.replace("{" + param["name"] + "}", values.get(param["name"], "x"))
                refused = ci.request(method, url)
                assert refused.status_code == 403, f"{method} {path}: {refused.text}"
                assert refused.json()["code"] == "forbidden"
                assert refused.json()["detail"] == DEPLOY_ONLY, f"{method} {path}"
                checked += 1
    assert checked > 30  # instances, env, files, tokens, keys, backups, jobs, accounts...
    shown = world.owner.api.get(f"/api/instances/{world.a}")
    assert shown.status_code == 200 and shown.json()["status"] == "stopped"  # all untouched
    assert world.deploy_a["id"] in {t["id"] for t in world.owner.api.get("/api/tokens").json()}


def test_named_refusals_of_a_deploy_token(world: World) -> None:
    with world.owner.as_token(world.deploy_a) as ci:
        for method, path, kwargs in [
            ("GET", "/api/instances", {}),
            ("POST", "/api/instances", {"json": {"name": unique("nope")}}),
            ("GET", f"/api/instances/{world.a}/env", {}),
            ("PUT", f"/api/instances/{world.a}/env", {"json": {"vars": {"A": "b"}}}),
            ("GET", f"/api/instances/{world.a}/files", {}),
            ("GET", "/api/tokens", {}),
            ("POST", "/api/tokens", {"json": {"name": "wider"}}),
            ("POST", "/api/tokens", {"json": {"name": "same", "scope": "deploy"}}),
            ("DELETE", f"/api/tokens/{world.deploy_a['id']}", {}),
            ("GET", "/api/accounts/me", {}),
        ]:
            refused = ci.request(method, path, **kwargs)
            assert refused.status_code == 403, f"{method} {path}: {refused.text}"
            assert refused.json()["detail"] == DEPLOY_ONLY
    assert world.c not in {i["name"] for i in world.owner.api.get("/api/instances").json()}


def test_other_instances_are_the_404_of_an_unknown_one(world: World) -> None:
    tar = archive({"pb_public/index.html": "not here"})
    ghost = unique("ghost")
    with world.owner.as_token(world.deploy_a) as ci:
        for name in (world.b, world.c, ghost):  # the owner's other, another account's, none
            refused_as_unknown(world, ci.get(f"/api/instances/{name}"), name)
            refused_as_unknown(world, ci.get(f"/api/instances/{name}/deploys"), name)
            posted = ci.post(f"/api/instances/{name}/deploys", content=tar, headers=GZIP)
            refused_as_unknown(world, posted, name)
            back = ci.post(f"/api/instances/{name}/deploys/previous/rollback")
            refused_as_unknown(world, back, name)
    assert world.owner.api.get(f"/api/instances/{world.b}/deploys").json() == []


def test_a_deploy_token_for_every_instance_opens_only_the_accounts_own(world: World) -> None:
    with world.owner.as_token(world.owner.token(scope="deploy")) as ci:
        for name in (world.a, world.b):
            assert ci.get(f"/api/instances/{name}").status_code == 200
        refused_as_unknown(world, ci.get(f"/api/instances/{world.c}"), world.c)
        assert ci.get("/api/instances").status_code == 403
    # an operator's session sees every instance; its deploy token only its own (none)
    assert world.operator.api.get(f"/api/instances/{world.c}").status_code == 200
    with world.operator.as_token(world.operator.token(scope="deploy")) as ci:
        refused_as_unknown(world, ci.get(f"/api/instances/{world.c}"), world.c)
        refused_as_unknown(world, ci.get(f"/api/instances/{world.c}/deploys"), world.c)
        assert ci.get("/api/fleet").status_code == 403


def test_a_listed_instance_deleted_and_its_name_taken_again_is_not_opened(world: World) -> None:
    name = world.owner.instance()
    row = world.owner.token(scope="deploy", instances=[name])
    assert world.owner.api.delete(f"/api/instances/{name}").status_code == 204
    listed = {t["id"]: t for t in world.owner.api.get("/api/tokens").json()}
    assert listed[row["id"]]["instances"] == []  # opens nothing now, not everything
    assert world.owner.api.post("/api/instances", json={"name": name}).status_code == 201
    with world.owner.as_token(row) as ci:
        refused_as_unknown(world, ci.get(f"/api/instances/{name}"), name)
        refused_as_unknown(world, ci.get(f"/api/instances/{world.a}"), world.a)
    assert world.owner.api.delete(f"/api/instances/{name}").status_code == 204


# ----- full tokens, revoking


def test_a_full_token_still_may_do_everything(world: World) -> None:
    with world.owner.as_token(world.owner.token()) as full:
        assert world.a in {i["name"] for i in full.get("/api/instances").json()}
        assert full.get(f"/api/instances/{world.a}/env").status_code == 200
        assert full.get(f"/api/instances/{world.a}/deploys").status_code == 200
        made = full.post("/api/tokens", json={"name": "made by a token", "scope": "deploy"})
        assert made.status_code == 201 and made.json()["scope"] == "deploy"
        assert full.delete(f"/api/tokens/{made.json()['id']}").status_code == 204


def test_revoking_a_deploy_token(world: World) -> None:
    row = world.owner.token(scope="deploy", instances=[world.a])
    with world.owner.as_token(row) as ci:
        assert ci.get(f"/api/instances/{world.a}").status_code == 200
        assert world.owner.api.delete(f"/api/tokens/{row['id']}").status_code == 204
        assert ci.get(f"/api/instances/{world.a}").status_code == 401
        assert ci.get(f"/api/instances/{world.a}/deploys").status_code == 401
    assert row["id"] not in {t["id"] for t in world.owner.api.get("/api/tokens").json()}


def test_a_deploy_token_may_revoke_itself(world: World) -> None:
    row = world.owner.token(scope="deploy", instances=[world.a])
    with world.owner.as_token(row) as ci:
        assert ci.delete("/api/sessions/current").status_code == 204
        assert ci.get(f"/api/instances/{world.a}").status_code == 401


# ----- the CLI


def test_cli_tokens_create_and_ls(serve: ServeProcess, world: World, tmp_path: Path) -> None:
    session = world.owner.api.headers["Authorization"].removeprefix("Bearer ")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PF_URL": serve.url,
        "PF_TOKEN": session,
        "COLUMNS": "250",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "pocketfleet"), *args], env=env, capture_output=True, text=True, timeout=60
        )

    made = cli("tokens", "create", "from-cli", "--scope", "deploy", "--instances", world.a)
    assert made.returncode == 0, made.stdout + made.stderr
    assert f"deploys of {world.a}" in made.stdout
    token = made.stdout.split()[-1]
    assert token.startswith("pf_")
    listed = cli("tokens", "ls")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "from-cli" in line)
    assert "deploy" in line and world.a in line

    wrong = cli("tokens", "create", "bad", "--instances", world.a)  # scope full
    assert wrong.returncode == 1 and "instances" in wrong.stderr
    elsewhere = cli("tokens", "create", "bad", "--scope", "deploy", "--instances", world.c)
    assert elsewhere.returncode == 1 and "you have no instance named" in elsewhere.stderr

    env["PF_TOKEN"] = token  # the new deploy token: it may not list tokens
    refused = cli("tokens", "ls")
    assert refused.returncode == 1 and "scope deploy" in refused.stderr.replace("\n", " ")


# ----- migration 0012


async def _migrated_token(url: str) -> ApiToken:
    """A token row written at revision 0011, read back at the newest revision."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0011")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO account (id, email, password_hash, is_operator, created_at) "
                    "VALUES ('acct', 'old@example.com', 'x', false, CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO api_token (id, account_id, kind, name, token_hash, prefix, "
                    "created_at) VALUES ('tok', 'acct', 'api', 'old', 'h', 'pf_', "
                    "CURRENT_TIMESTAMP)"
                )
            )
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        async with AsyncSession(engine) as session:
            return (await session.exec(select(ApiToken))).one()
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_backend", ["sqlite", "postgres"])
async def test_migration_0012_makes_existing_tokens_full(
    db_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if db_backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        url = postgres.create_database(unique("scopes_migration"))
    row = await _migrated_token(url)
    assert (row.name, row.scope, row.instance_ids) == ("old", "full", [])
    # and back down, and up again
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0011")
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
