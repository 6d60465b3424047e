"""Every refusal of the API in one shape, never echoing its input (`control_plane.api.errors`),
and input no engine, OS or library can take refused at the door (issue 13)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import ServeProcess, sign_up

_ids = itertools.count()

SHAPE = {"status", "code", "detail", "errors"}

# JSON that the standard library would take and nothing downstream can: each must be a 422
# from the decoding of the body, naming no value.
NOT_JSON = {
    "nan": b"NaN",
    "infinity": b"Infinity",
    "minus-infinity": b"-Infinity",
    "too-large-for-a-double": b"1e400",
    "lone-surrogate": b'"lone \\ud800 surrogate"',
}


@pytest.fixture(scope="module")
def backend() -> str:
    return "sqlite"  # the error layer is the same over either control database


class Owner:
    def __init__(self, serve: ServeProcess) -> None:
        self.email = f"errors{next(_ids)}@example.com"
        self.api = serve.client()
        self.api.headers["Authorization"] = f"Bearer {sign_up(self.api, self.email)}"
        self.name = f"errs{next(_ids)}"
        created = self.api.post("/api/instances", json={"name": self.name})
        assert created.status_code == 201, created.text


@pytest.fixture(scope="module")
def owner(serve: ServeProcess) -> Iterator[Owner]:
    person = Owner(serve)
    yield person
    person.api.close()


def assert_refusal(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, object] = response.json()
    assert body.keys() >= SHAPE, body
    assert body["status"] == status and body["code"] == code, body
    return body


def bodies_with(value: bytes, name: str) -> list[tuple[str, str, bytes]]:
    """(method, path, body) of the routes the fuzzer crashed, each with `value` in a field."""
    return [
        ("POST", "/api/sessions", b'{"email": "a@example.com", "password": %s}' % value),
        ("POST", "/api/accounts", b'{"email": "b@example.com", "password": %s}' % value),
        ("PATCH", f"/api/instances/{name}", b'{"idle_timeout_s": %s}' % value),
        ("PUT", f"/api/instances/{name}/env", b'{"vars": {"A": %s}}' % value),
        ("POST", f"/api/instances/{name}/restore", b'{"point_in_time": %s}' % value),
    ]


@pytest.mark.parametrize("value", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_what_json_does_not_have_is_422_and_never_echoed(owner: Owner, value: bytes) -> None:
    for method, path, content in bodies_with(value, owner.name):
        response = owner.api.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )
        body = assert_refusal(response, 422, "invalid")
        assert body["field"] == "body", body
        assert str(body["detail"]).startswith("the body is not valid JSON"), body
        assert value.decode() not in response.text and 'surrogate"' not in response.text


def test_a_nul_anywhere_is_422_naming_where(owner: Owner) -> None:
    for method, path, content in bodies_with(b'"nul\\u0000inside"', owner.name):
        response = owner.api.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )
        body = assert_refusal(response, 422, "invalid")
        errors = body["errors"]
        assert isinstance(errors, list) and errors[0]["code"] == "nul_character", body
        assert "inside" not in response.text, response.text
    key = owner.api.put(f"/api/instances/{owner.name}/env", json={"vars": {"A\u0000B": "x"}})
    assert assert_refusal(key, 422, "invalid")["field"] == "vars.A\\u0000B"


def test_refused_env_values_leave_nothing_in_the_log(owner: Owner, serve: ServeProcess) -> None:
    secret = b"s3cret-env-value-7"
    # as JSON text: a NUL, a lone surrogate, a value over the limit
    for value in (secret + rb"\u0000", secret + rb"\ud800", secret + b"x" * 9000):
        response = owner.api.put(
            f"/api/instances/{owner.name}/env",
            content=b'{"vars": {"API_KEY": "%s"}}' % value,
            headers={"Content-Type": "application/json"},
        )
        assert_refusal(response, 422, "invalid")
        assert secret not in response.content
    assert secret not in serve.log_path.read_bytes()


def test_a_large_invalid_body_is_not_sent_back(owner: Owner) -> None:
    padding = "p" * 500_000
    response = owner.api.put(f"/api/instances/{owner.name}/env", json={"vars": [padding]})
    body = assert_refusal(response, 422, "invalid")
    assert body["field"] == "vars" and len(response.content) < 2000, len(response.content)


def test_validation_errors_name_every_field(owner: Owner) -> None:
    response = owner.api.post("/api/accounts", json={"email": "nope-at", "password": "shortpw"})
    body = assert_refusal(response, 422, "invalid")
    assert {problem["field"] for problem in body["errors"]} == {"email", "password"}, body  # type: ignore[attr-defined]
    assert "nope-at" not in response.text and "shortpw" not in response.text


DEVANAGARI_37 = "क" * 37  # 37 characters, 111 bytes in UTF-8: over bcrypt's 72


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        (DEVANAGARI_37, "at most 72 bytes in UTF-8"),
        ("x" * 73, "at most 72"),
    ],
    ids=["37-devanagari-characters", "73-ascii-characters"],
)
def test_a_superuser_password_bcrypt_cannot_take_is_422_and_never_logged(
    owner: Owner, serve: ServeProcess, password: str, reason: str
) -> None:
    name = f"bcrypt{next(_ids)}"
    response = owner.api.post("/api/instances", json={"name": name, "superuser_password": password})
    body = assert_refusal(response, 422, "invalid")
    assert body["field"] == "superuser_password" and reason in str(body["detail"]), body
    assert password not in response.text
    assert owner.api.get(f"/api/instances/{name}").status_code == 404  # nothing was created
    assert password not in serve.log_path.read_text(errors="replace")


def test_a_password_of_72_bytes_is_taken(owner: Owner) -> None:
    name = f"bcrypt{next(_ids)}"
    password = "é" * 36  # 72 bytes
    response = owner.api.post("/api/instances", json={"name": name, "superuser_password": password})
    assert response.status_code == 201, response.text


def test_an_account_password_with_nul_is_422(owner: Owner) -> None:
    # sent escaped in JSON: refused as the body is decoded, naming the field
    response = owner.api.post(
        "/api/accounts", json={"email": "nul@example.com", "password": "0123456789\u0000"}
    )
    assert assert_refusal(response, 422, "invalid")["field"] == "password"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/no-such-route", 404, "not_found"),
        ("DELETE", "/api/health", 405, "method_not_allowed"),
        ("GET", "/api/instances/no-such-instance", 404, "not_found"),
    ],
)
def test_routing_and_service_refusals_share_the_shape(
    owner: Owner, method: str, path: str, status: int, code: str
) -> None:
    assert_refusal(owner.api.request(method, path), status, code)


def test_unauthenticated_is_401_in_the_shape(serve: ServeProcess) -> None:
    with serve.client() as anonymous:
        response = anonymous.get("/api/instances")
    body = assert_refusal(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer", body


def test_the_openapi_document_describes_the_refusals(serve: ServeProcess) -> None:
    with serve.client() as client:
        document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ErrorPublic" in schemas
    create = document["paths"]["/api/instances"]["post"]
    for status in ("401", "409", "413", "422"):
        content = create["responses"][status]["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/ErrorPublic"}, status
    name = schemas["InstanceCreate"]["properties"]["name"]
    assert (name["minLength"], name["maxLength"]) == (3, 40) and name["pattern"].startswith("^")
    superuser_password = schemas["InstanceCreate"]["properties"]["superuser_password"]
    assert "72 bytes" in str(superuser_password)
