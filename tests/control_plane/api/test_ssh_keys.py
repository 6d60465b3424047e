"""`/api/ssh-keys`: an account's SSH public keys for SFTP, the host key, and every refusal."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator

import asyncssh
import httpx
import pytest

from control_plane.sftp.service import MAX_KEYS_PER_ACCOUNT
from tests.support.ports import free_port
from tests.support.server import ServeProcess, running_server, sign_up

_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


def public_key(alg: str = "ssh-ed25519", comment: str = "me@laptop", **options: int) -> str:
    key = asyncssh.generate_private_key(alg, comment=comment, **options)
    return key.export_public_key("openssh").decode("ascii")


@pytest.fixture(scope="module")
def backend() -> str:
    return "sqlite"


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    with running_server(env={"PF_SFTP": f"127.0.0.1:{free_port()}"}) as server:
        yield server


@pytest.fixture
def api(serve: ServeProcess) -> Iterator[httpx.Client]:
    client = serve.client()
    client.headers["Authorization"] = f"Bearer {sign_up(client, unique('keys') + '@x.com')}"
    yield client
    client.close()


def create(api: httpx.Client) -> str:
    name = unique("keyapp")
    assert api.post("/api/instances", json={"name": name}).status_code == 201
    return name


def refused(response: httpx.Response, status: int, field: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    if field is not None:
        assert [error["field"] for error in body["errors"]] == [field], body
    detail: str = body["detail"]
    return detail


def test_add_list_and_remove(api: httpx.Client) -> None:
    text = public_key(comment="laptop of ann")
    added = api.post("/api/ssh-keys", json={"public_key": text})
    assert added.status_code == 201, added.text
    row = added.json()
    assert row["name"] == "laptop of ann"  # the comment, by default
    assert row["key_type"] == "ssh-ed25519"
    assert row["public_key"] == " ".join(text.split()[:2])  # canonical: no comment
    assert row["fingerprint"].startswith("SHA256:")
    assert row["instances"] is None and row["last_used"] is None

    named = api.post("/api/ssh-keys", json={"public_key": public_key(), "name": " ci  key "})
    assert named.json()["name"] == "ci key"
    listed = api.get("/api/ssh-keys").json()
    assert [k["id"] for k in listed] == [row["id"], named.json()["id"]]

    assert api.delete(f"/api/ssh-keys/{row['id']}").status_code == 204
    assert [k["id"] for k in api.get("/api/ssh-keys").json()] == [named.json()["id"]]
    refused(api.delete(f"/api/ssh-keys/{row['id']}"), 404)


def test_all_accepted_types(api: httpx.Client) -> None:
    for alg, options in (
        ("ecdsa-sha2-nistp256", {}),
        ("ecdsa-sha2-nistp384", {}),
        ("ecdsa-sha2-nistp521", {}),
        ("ssh-rsa", {"key_size": 3072}),
    ):
        added = api.post("/api/ssh-keys", json={"public_key": public_key(alg, **options)})
        assert added.status_code == 201, added.text
        assert added.json()["key_type"] == alg


def test_a_key_limited_to_instances(api: httpx.Client) -> None:
    first, second = create(api), create(api)
    added = api.post(
        "/api/ssh-keys", json={"public_key": public_key(), "instances": [second, first, second]}
    )
    assert added.status_code == 201, added.text
    assert added.json()["instances"] == [second, first]
    # a deleted instance drops out of the list; the key does not open "all" then
    assert api.delete(f"/api/instances/{second}?purge=true").status_code == 204
    assert api.delete(f"/api/instances/{first}?purge=true").status_code == 204
    row = next(k for k in api.get("/api/ssh-keys").json() if k["id"] == added.json()["id"])
    assert row["instances"] == []
    created_again = api.post("/api/instances", json={"name": second})
    assert created_again.status_code == 201, created_again.text  # the name is free again
    row = next(k for k in api.get("/api/ssh-keys").json() if k["id"] == added.json()["id"])
    assert row["instances"] == []  # a new instance of that name is another instance


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (public_key("ssh-rsa", key_size=2048), "3072"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "DSA"),
        ("ssh-ed25519 not-base64!", "malformed"),
        ("ssh-ed25519 AAAA", "malformed"),
        ('command="rm -rf /" ' + public_key(), "options"),
        (public_key() + public_key(), "one public key"),
        ("hello world", "not an accepted key type"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----", "private"),
        ("", "at least 1 character"),
    ],
)
def test_bad_keys_are_422_naming_public_key(api: httpx.Client, text: str, says: str) -> None:
    response = api.post("/api/ssh-keys", json={"public_key": text})
    assert says in refused(response, 422, "public_key") + str(response.json()["errors"])


def test_the_same_key_twice_is_409_but_another_account_may_add_it(
    api: httpx.Client, serve: ServeProcess
) -> None:
    text = public_key()
    assert api.post("/api/ssh-keys", json={"public_key": text}).status_code == 201
    again = api.post("/api/ssh-keys", json={"public_key": text.replace("me@laptop", "other")})
    assert "already added" in refused(again, 409, "public_key")
    with serve.client() as other:
        other.headers["Authorization"] = f"Bearer {sign_up(other, unique('k') + '@x.com')}"
        assert other.post("/api/ssh-keys", json={"public_key": text}).status_code == 201


def test_instances_must_be_the_callers_own(api: httpx.Client, serve: ServeProcess) -> None:
    refused(
        api.post("/api/ssh-keys", json={"public_key": public_key(), "instances": ["nosuch"]}),
        422,
        "instances",
    )
    with serve.client() as other:
        other.headers["Authorization"] = f"Bearer {sign_up(other, unique('k') + '@x.com')}"
        theirs = create(other)
    detail = refused(
        api.post("/api/ssh-keys", json={"public_key": public_key(), "instances": [theirs]}),
        422,
        "instances",
    )
    assert "you have no instance" in detail
    assert api.get("/api/ssh-keys").json() == []


def test_names_and_shapes_are_checked(api: httpx.Client) -> None:
    key = public_key()
    refused(api.post("/api/ssh-keys", json={"public_key": key, "name": "a\x1bb"}), 422, "name")
    refused(api.post("/api/ssh-keys", json={"public_key": key, "name": "x" * 101}), 422, "name")
    refused(api.post("/api/ssh-keys", json={"public_key": key, "instances": "all"}), 422)
    refused(api.post("/api/ssh-keys", json={"public_key": key, "instances": []}), 422)
    refused(api.post("/api/ssh-keys", json={"public_key": key, "instances": [""] * 101}), 422)
    refused(api.post("/api/ssh-keys", json={"key": key}), 422)
    refused(api.post("/api/ssh-keys", json={"public_key": "x" * 20_000}), 422, "public_key")


def test_another_accounts_key_is_404_to_remove(api: httpx.Client, serve: ServeProcess) -> None:
    row = api.post("/api/ssh-keys", json={"public_key": public_key()}).json()
    with serve.client() as other:
        other.headers["Authorization"] = f"Bearer {sign_up(other, unique('k') + '@x.com')}"
        refused(other.delete(f"/api/ssh-keys/{row['id']}"), 404)
        assert other.get("/api/ssh-keys").json() == []
    assert [k["id"] for k in api.get("/api/ssh-keys").json()] == [row["id"]]


def test_an_account_has_at_most_so_many_keys(api: httpx.Client) -> None:
    for _ in range(MAX_KEYS_PER_ACCOUNT):
        assert api.post("/api/ssh-keys", json={"public_key": public_key()}).status_code == 201
    refused(api.post("/api/ssh-keys", json={"public_key": public_key()}), 409)


def test_the_host_key(api: httpx.Client, serve: ServeProcess) -> None:
    host = api.get("/api/ssh-keys/host").json()
    assert host["key_type"] == "ssh-ed25519"
    assert host["address"].startswith("127.0.0.1:") and host["port"] > 0
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(serve.data_dir / "ssh_host_ed25519_key")],
        check=True, capture_output=True, text=True,
    ).stdout.split()[1]  # fmt: skip
    assert host["fingerprint"] == printed
    assert host["public_key"].startswith("ssh-ed25519 ")


def test_every_route_needs_a_login(serve: ServeProcess) -> None:
    with serve.client() as anonymous:
        for method, path in (
            ("GET", "/api/ssh-keys"),
            ("POST", "/api/ssh-keys"),
            ("DELETE", "/api/ssh-keys/abc"),
            ("GET", "/api/ssh-keys/host"),
        ):
            refused(anonymous.request(method, path, json={}), 401)


def test_the_host_key_survives_a_restart(serve: ServeProcess, api: httpx.Client) -> None:
    before = api.get("/api/ssh-keys/host").json()["fingerprint"]
    serve.stop()
    serve.start()
    with serve.client() as again:
        again.headers["Authorization"] = api.headers["Authorization"]
        assert again.get("/api/ssh-keys/host").json()["fingerprint"] == before
