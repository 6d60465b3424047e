"""Instance environment variables over the real API (SQLite and PostgreSQL control DBs): names
and values refused with the reason, masks, values sealed at rest, and values stored in clear
by an older pocketfleet still reaching the instance."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from control_plane.db.engine import create_engine
from control_plane.env_rules import MAX_VALUE_BYTES, MAX_VARS
from tests.support.server import ServeProcess, sign_up

MASK = "••••••••"
# a route of the instance that answers what its own process sees in its environment
ENV_HOOK = """
routerAdd("GET", "/pf-test/env/{name}", (e) => {
    return e.json(200, { "value": $os.getenv(e.request.pathValue("name")) })
})
"""

_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


class Owner:
    def __init__(self, serve: ServeProcess) -> None:
        self.serve = serve
        self.email = f"{unique('envowner')}@example.com"
        self.api = serve.client()
        self.api.headers["Authorization"] = f"Bearer {sign_up(self.api, self.email)}"

    def create(self, name: str, **extra: object) -> dict[str, Any]:
        created = self.api.post("/api/instances", json={"name": name, **extra})
        assert created.status_code == 201, created.text
        body: dict[str, Any] = created.json()
        return body

    def put_env(self, name: str, env: dict[str, str]) -> httpx.Response:
        return self.api.put(f"/api/instances/{name}/env", json={"vars": env})

    def env(self, name: str) -> list[dict[str, Any]]:
        listed = self.api.get(f"/api/instances/{name}/env")
        assert listed.status_code == 200, listed.text
        result: list[dict[str, Any]] = listed.json()["vars"]
        return result

    def names(self, name: str) -> list[str]:
        return [var["name"] for var in self.env(name)]

    def move(self, name: str, verb: str) -> None:
        moved = self.api.post(f"/api/instances/{name}/{verb}")
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == ("running" if verb == "start" else "stopped")

    def with_env_hook(self, name: str) -> None:
        """Create `name`, stopped, with a hook that answers its environment."""
        instance_id = self.create(name)["id"]
        self.move(name, "stop")
        hooks = self.serve.data_dir / "instances" / instance_id / "pb_hooks"
        # (stopped before its first start, it may have no folder yet: the driver hands over
        # whatever it finds at the first start)
        hooks.mkdir(parents=True, exist_ok=True)
        (hooks / "env.pb.js").write_text(ENV_HOOK)
        (hooks / "env.pb.js").chmod(0o644)

    def seen_by_instance(self, name: str, variable: str) -> str:
        with self.serve.instance_client(name) as instance:
            answer = instance.get(f"/pf-test/env/{variable}")
        assert answer.status_code == 200, answer.text
        value: str = answer.json()["value"]
        return value


@pytest.fixture(scope="module")
def owner(serve: ServeProcess) -> Iterator[Owner]:
    person = Owner(serve)
    yield person
    person.api.close()


@pytest.fixture(scope="module")
def refusing(owner: Owner) -> str:
    """An instance with one variable, which every refusal below must leave alone."""
    name = unique("refuse")
    owner.create(name)
    assert owner.put_env(name, {"KEPT": "as it was"}).status_code == 200
    return name


def control_db_url(serve: ServeProcess) -> str:
    return serve.database_url or f"sqlite+aiosqlite:///{serve.data_dir.resolve() / 'control.db'}"


def raw_sql(serve: ServeProcess, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """Run `sql` on the control DB directly, as an older pocketfleet or an attacker would."""

    async def run() -> list[tuple[Any, ...]]:
        engine = create_engine(control_db_url(serve))
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(sql), params)
                return [tuple(row) for row in result.all()] if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def stored(serve: ServeProcess, name: str, column: str) -> str:
    rows = raw_sql(serve, f"SELECT CAST({column} AS TEXT) FROM instance WHERE name = :n", n=name)
    return str(rows[0][0])


def sqlite_bytes(serve: ServeProcess) -> bytes:
    """Every byte of a SQLite control DB on disk: the file, its WAL and shared memory."""
    path = serve.data_dir / "control.db"
    return b"".join(
        p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def assert_not_at_rest(serve: ServeProcess, name: str, column: str, secret: str) -> None:
    """`secret` appears nowhere in the control DB: not in the column, not in the file."""
    assert secret not in stored(serve, name, column)
    if serve.database_url is None:
        assert secret.encode() not in sqlite_bytes(serve)


# one name of every class of refused names (env_rules), with part of the reason
REFUSED = [
    ("LD_PRELOAD", "dynamic linker"),
    ("LD_LIBRARY_PATH", "dynamic linker"),
    ("GCONV_PATH", "C library"),
    ("MALLOC_CHECK_", "C library"),
    ("NLSPATH", "C library"),
    ("HOSTALIASES", "resolver"),
    ("RES_OPTIONS", "resolver"),
    ("GODEBUG", "Go runtime"),
    ("GOMEMLIMIT", "Go runtime"),
    ("PYTHONPATH", "Python"),
    ("BASH_ENV", "shell"),
    ("IFS", "shell"),
    ("PATH", "platform"),
    ("HOME", "platform"),
    ("TMPDIR", "platform"),
    ("SSL_CERT_FILE", "TLS"),
    ("https_proxy", "proxy"),
    ("PF_ACTIVITY_SOCKET", "pocketfleet"),
    ("PB_THUMBS_MAX_WORKERS", "PocketBase"),
    ("1BAD", "not a valid variable name"),
    ("X" * 129, "at most 128 characters"),
]


@pytest.mark.parametrize(("variable", "reason"), REFUSED)
def test_refused_names_are_422_naming_the_variable_and_why(
    owner: Owner, refusing: str, variable: str, reason: str
) -> None:
    refused = owner.put_env(refusing, {"GREETING": "hello", variable: "x"})
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["detail"].startswith(f"{variable}: ") and reason in body["detail"]
    assert body["field"] == "vars"
    assert owner.names(refusing) == ["KEPT"]  # nothing stored, not even GREETING


@pytest.mark.parametrize(
    ("vars_json", "reason"),
    [
        # refused as the body is decoded (`control_plane.api.json_body`), before env rules
        ('{"A": "nul\\u0000inside"}', "vars.A: a string holds the NUL character"),
        ('{"A": "lone \\ud800 surrogate"}', "not valid JSON (no low surrogate in string)"),
        (json.dumps({"A": "x" * (MAX_VALUE_BYTES + 1)}), f"at most {MAX_VALUE_BYTES}"),
        (json.dumps({"A": "é" * (MAX_VALUE_BYTES // 2 + 1)}), "bytes; at most"),
        (json.dumps({f"V{n}": "x" for n in range(MAX_VARS + 1)}), f"at most {MAX_VARS} variables"),
        (json.dumps({f"V{n}": "x" * 8000 for n in range(9)}), "at most 65536"),
    ],
    ids=["nul", "lone-surrogate", "oversize", "oversize-in-bytes", "too-many", "too-big-in-all"],
)
def test_bad_values_are_422_and_nothing_is_stored(
    owner: Owner, refusing: str, vars_json: str, reason: str
) -> None:
    refused = owner.api.put(
        f"/api/instances/{refusing}/env",
        content=f'{{"vars": {vars_json}}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    assert reason in refused.json()["detail"]
    assert owner.names(refusing) == ["KEPT"]


def test_masks_show_no_character_of_the_value(owner: Owner) -> None:
    name = unique("mask")
    owner.create(name)
    value = "s3cret-value-123"
    put = owner.put_env(name, {"API_SECRET": value, "EMPTY": ""})
    assert put.status_code == 200, put.text
    expected = [
        {"name": "API_SECRET", "preview": MASK, "length_class": "9–16 characters", "refused": None},
        {"name": "EMPTY", "preview": MASK, "length_class": "empty", "refused": None},
    ]
    assert put.json()["vars"] == expected
    assert owner.env(name) == expected
    assert not set(MASK) & set(value)
    for text in (put.text, owner.api.get(f"/api/instances/{name}/env").text):
        assert value not in text and "s3" not in text


def test_a_value_reaches_the_instance_and_is_sealed_at_rest(
    owner: Owner, serve: ServeProcess
) -> None:
    name = unique("sealed")
    owner.with_env_hook(name)
    value = f"zebra-{secrets.token_hex(8)}"
    assert owner.put_env(name, {"API_SECRET": value}).status_code == 200
    owner.move(name, "start")
    assert owner.seen_by_instance(name, "API_SECRET") == value
    assert json.loads(stored(serve, name, "env")).startswith("fernet:")
    assert_not_at_rest(serve, name, "env", value)
    key_file = serve.data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_the_superuser_password_given_at_create_is_sealed_at_rest(
    owner: Owner, serve: ServeProcess
) -> None:
    name = unique("supw")
    password = f"giraffe-{secrets.token_hex(8)}"
    owner.create(name, superuser_password=password)
    assert_not_at_rest(serve, name, "pending_superuser", password)  # before the first start
    owner.move(name, "start")
    with serve.instance_client(name) as instance:  # it did reach the instance
        auth = instance.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": owner.email, "password": password},
        )
    assert auth.status_code == 200, auth.text
    assert_not_at_rest(serve, name, "pending_superuser", password)


def test_values_stored_in_clear_before_are_sealed_at_start_and_still_reach_the_instance(
    owner: Owner, serve: ServeProcess
) -> None:
    name = unique("legacy")
    owner.with_env_hook(name)
    value = f"okapi-{secrets.token_hex(8)}"
    serve.stop()
    legacy = {"API_SECRET": value, "LD_PRELOAD": "/nonexistent/library.so"}
    raw_sql(
        serve,
        "UPDATE instance SET env = :env WHERE name = :n",
        env=json.dumps(legacy),
        n=name,
    )
    assert value in stored(serve, name, "env")  # in clear, as an older pocketfleet left it
    serve.start()
    assert json.loads(stored(serve, name, "env")).startswith("fernet:")
    assert_not_at_rest(serve, name, "env", value)
    owner.move(name, "start")
    assert owner.seen_by_instance(name, "API_SECRET") == value
    # the variable a newer rule refuses is listed with the reason, and can be removed
    listed = {var["name"]: var for var in owner.env(name)}
    assert listed["LD_PRELOAD"]["refused"] == "interpreted by the dynamic linker"
    assert listed["API_SECRET"]["refused"] is None
    assert owner.put_env(name, legacy).status_code == 422
    assert owner.put_env(name, {"API_SECRET": value}).status_code == 200
    assert owner.names(name) == ["API_SECRET"]
