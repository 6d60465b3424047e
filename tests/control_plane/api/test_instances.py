"""Instances through the real API and the embedded proxy, with real PocketBase processes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServeProcess, sign_up

_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


class User:
    def __init__(self, serve: ServeProcess) -> None:
        self.serve = serve
        self.email = f"{unique('owner')}@example.com"
        self.api = serve.client()
        self.api.headers["Authorization"] = f"Bearer {sign_up(self.api, self.email)}"

    def create(self, name: str, **extra: object) -> httpx.Response:
        return self.api.post("/api/instances", json={"name": name, **extra})

    def create_running(self, name: str, **extra: object) -> dict[str, object]:
        created = self.create(name, **extra)
        assert created.status_code == 201, created.text
        started = self.api.post(f"/api/instances/{name}/start")
        assert started.status_code == 200, started.text
        body: dict[str, object] = started.json()
        assert body["status"] == "running", body
        return body


@pytest.fixture
def user(serve: ServeProcess) -> Iterator[User]:
    person = User(serve)
    yield person
    person.api.close()


def test_create_answers_201_with_the_instance(user: User, serve: ServeProcess) -> None:
    name = unique("app")
    response = user.create(name)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == name
    assert body["url"] == f"http://{name}.localhost:{serve.port}"
    assert body["engine"] == "pocketbase"
    assert body["version"] == "0.40.6"
    assert body["status"] in ("provisioning", "running")


def test_an_instance_is_served_at_its_subdomain(user: User, serve: ServeProcess) -> None:
    name = unique("web")
    user.create_running(name)
    with serve.instance_client(name) as instance:
        health = instance.get("/api/health")
    assert health.status_code == 200
    assert health.json()["message"] == "API is healthy."


def test_each_instance_has_its_own_folder(user: User, serve: ServeProcess) -> None:
    name = unique("dir")
    instance_id = user.create_running(name)["id"]
    root = serve.data_dir / "instances" / str(instance_id)
    for folder in ("pb_data", "pb_migrations", "pb_hooks", "pb_public"):
        assert (root / folder).is_dir()
    assert (root / "pb_data" / "data.db").is_file()
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    assert not (Path.cwd() / "pb_migrations").exists()


@pytest.mark.parametrize(
    "name", ["ab", "-abc", "abc-", "ABC", "has_underscore", "a" * 41, "www", "api", "admin"]
)
def test_bad_or_reserved_names_are_422(user: User, name: str) -> None:
    response = user.create(name)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "name"


def test_a_taken_name_is_409(user: User, serve: ServeProcess) -> None:
    name = unique("taken")
    assert user.create(name).status_code == 201
    assert user.create(name).status_code == 409
    assert User(serve).create(name).status_code == 409


def test_an_unknown_engine_is_422_and_a_missing_version_400(user: User) -> None:
    assert user.create(unique("eng"), engine="nosuch").status_code == 422
    missing = user.create(unique("ver"), version="0.1.0")
    assert missing.status_code == 400
    assert "not installed" in missing.json()["detail"]


def test_the_quota_is_403(serve: ServeProcess) -> None:
    # the default quota is 10: nine more after one, then a refusal
    person = User(serve)
    for _ in range(10):
        assert (
            person.create(
                unique("q"),
            ).status_code
            == 201
        )
    refused = person.create(unique("q"))
    assert refused.status_code == 403
    assert "10 instances" in refused.json()["detail"]
    for row in person.api.get("/api/instances").json():
        assert person.api.delete(f"/api/instances/{row['name']}?purge=true").status_code == 204


def test_superuser_password_makes_the_owner_a_superuser(user: User, serve: ServeProcess) -> None:
    name = unique("su")
    user.create_running(name, superuser_password="super-secret-1")
    with serve.instance_client(name) as instance:
        auth = instance.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": user.email, "password": "super-secret-1"},
        )
    assert auth.status_code == 200, auth.text
    assert auth.json()["record"]["email"] == user.email


def test_stop_makes_the_proxy_answer_503_and_start_brings_it_back(
    user: User, serve: ServeProcess
) -> None:
    name = unique("stop")
    user.create_running(name)
    stopped = user.api.post(f"/api/instances/{name}/stop")
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped"
    assert user.api.post(f"/api/instances/{name}/stop").json()["status"] == "stopped"
    with serve.instance_client(name) as instance:
        down = instance.get("/api/health")
        assert down.status_code == 503
        assert down.json()["status"] == 503
        assert user.api.post(f"/api/instances/{name}/start").json()["status"] == "running"
        assert user.api.post(f"/api/instances/{name}/start").json()["status"] == "running"
        assert instance.get("/api/health").status_code == 200


def test_an_unknown_host_is_404_json(serve: ServeProcess) -> None:
    with serve.instance_client("nobody-here") as instance:
        response = instance.get("/api/health")
    assert response.status_code == 404
    assert response.json()["status"] == 404


def test_another_accounts_instance_is_404(user: User, serve: ServeProcess) -> None:
    name = unique("mine")
    user.create_running(name)
    other = User(serve)
    for method, path in [
        ("GET", f"/api/instances/{name}"),
        ("PATCH", f"/api/instances/{name}"),
        ("POST", f"/api/instances/{name}/stop"),
        ("POST", f"/api/instances/{name}/start"),
        ("GET", f"/api/instances/{name}/logs"),
        ("PUT", f"/api/instances/{name}/env"),
        ("DELETE", f"/api/instances/{name}"),
    ]:
        body = {} if method in ("PATCH", "PUT") else None
        response = other.api.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert other.api.get("/api/instances").json() == []
    assert user.api.get(f"/api/instances/{name}").json()["status"] == "running"


def test_env_values_are_masked_and_reach_the_instance(user: User) -> None:
    name = unique("env")
    user.create_running(name)
    put = user.api.put(
        f"/api/instances/{name}/env", json={"vars": {"API_SECRET": "s3cret-value-123"}}
    )
    assert put.status_code == 200
    assert "s3cret-value-123" not in put.text
    masked = {"preview": "••••••••", "length_class": "9–16 characters", "refused": None}
    assert put.json()["vars"] == [{"name": "API_SECRET", **masked}]  # see test_instances_env
    assert "s3cret-value-123" not in user.api.get(f"/api/instances/{name}/env").text
    bad = user.api.put(f"/api/instances/{name}/env", json={"vars": {"1BAD": "x"}})
    assert bad.status_code == 422
    reserved = user.api.put(f"/api/instances/{name}/env", json={"vars": {"PF_X": "x"}})
    assert reserved.status_code == 422


def test_logs_show_the_instance_output(user: User) -> None:
    name = unique("logs")
    user.create_running(name)
    response = user.api.get(f"/api/instances/{name}/logs", params={"tail": 50})
    assert response.status_code == 200
    assert any("Server started" in line for line in response.json()["lines"])
    assert user.api.get(f"/api/instances/{name}/logs", params={"tail": 0}).status_code == 422


def test_delete_moves_the_folder_to_the_trash(user: User, serve: ServeProcess) -> None:
    name = unique("del")
    instance_id = user.create_running(name)["id"]
    assert user.api.delete(f"/api/instances/{name}").status_code == 204
    assert user.api.get(f"/api/instances/{name}").status_code == 404
    assert not (serve.data_dir / "instances" / str(instance_id)).exists()
    trashed = list((serve.data_dir / "trash").glob(f"*-{instance_id}-{name}"))
    assert len(trashed) == 1
    assert (trashed[0] / "pb_data" / "data.db").is_file()
    with serve.instance_client(name) as instance:
        assert instance.get("/api/health").status_code == 404
    # the name is free again
    assert user.create(name).status_code == 201


def test_purge_deletes_the_folder_now(user: User, serve: ServeProcess) -> None:
    name = unique("purge")
    instance_id = user.create_running(name)["id"]
    assert user.api.delete(f"/api/instances/{name}", params={"purge": True}).status_code == 204
    assert not list((serve.data_dir / "trash").glob(f"*-{instance_id}-*"))
    assert not (serve.data_dir / "instances" / str(instance_id)).exists()


def test_patch_refuses_a_version_not_installed_with_400(user: User) -> None:
    name = unique("patch")
    user.create_running(name)
    response = user.api.patch(f"/api/instances/{name}", json={"version": "0.0.1"})
    assert response.status_code == 400
    assert response.json()["field"] == "version"
    ok = user.api.patch(f"/api/instances/{name}", json={"idle_timeout_s": 0})
    assert ok.status_code == 200
    assert ok.json()["idle_timeout_s"] == 0
    assert user.api.patch(f"/api/instances/{name}", json={"idle_timeout_s": -1}).status_code == 422
