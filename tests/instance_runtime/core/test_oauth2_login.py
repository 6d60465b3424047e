"""core.oauth2_login, core.oauth2_redirect and core.external_auths over a real App, against a
real OpenID Connect provider on loopback (tests/support/oidc.py): the form binding, a login
without HTTP, the `on_record_auth_with_oauth2_request` hook, a link whose record is gone, the
avatar of a file field, and the seam through which the realtime broker (issue 16) will receive
`/api/oauth2-redirect` (driven here in process over HTTP, with a receiver that plays the
broker's part). Side by side with PocketBase: tests/conformance/test_conformance_auth_oauth2.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from instance_runtime.core import oauth2_login, oauth2_redirect
from instance_runtime.core.app import App
from instance_runtime.core.auth import upsert_superuser
from instance_runtime.core.errors import ApiError
from instance_runtime.core.events import RecordAuthWithOAuth2RequestEvent
from instance_runtime.core.models import Collection
from instance_runtime.core.oauth2_login import OAuth2Form
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.server import create_app
from tests.support.oidc import OidcProvider, authorize_url

EMAIL, PASSWORD = "root@example.com", "root-pass-12345"
REDIRECT = "http://127.0.0.1/api/oauth2-redirect"  # registered with the provider
Scenario = Callable[[httpx.AsyncClient, App], Awaitable[None]]


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


def run(tmp_path: Path, idp: OidcProvider, scenario: Scenario, **oauth2: Any) -> None:
    """`scenario(client, app)` on a fresh app whose `users` log in with `idp` (as `oidc`);
    `client` is the superuser's, in process."""

    async def main() -> None:
        asgi = create_app(tmp_path / "pb_data")
        app: App = asgi.state.runtime
        app.write_sync(lambda conn, schema: upsert_superuser(conn, schema, EMAIL, PASSWORD))
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            login = await client.post(
                "/api/collections/_superusers/auth-with-password",
                json={"identity": EMAIL, "password": PASSWORD},
            )
            client.headers["Authorization"] = login.json()["token"]
            settings = {"enabled": True, "providers": [idp.pocketbase_provider()], **oauth2}
            updated = await client.patch("/api/collections/users", json={"oauth2": settings})
            assert updated.status_code == 200, updated.text
            await scenario(client, app)
        app.close()

    asyncio.run(main())


async def new_code(client: httpx.AsyncClient, idp: OidcProvider) -> OAuth2Form:
    """A person's login at the provider: the form auth-with-oauth2 takes for it."""
    methods = await client.get("/api/collections/users/auth-methods")
    (info,) = methods.json()["oauth2"]["providers"]
    result = await asyncio.to_thread(idp.authorize, authorize_url(info, REDIRECT))
    return OAuth2Form("oidc", result.require_code(info["state"]), info["codeVerifier"], REDIRECT)


def users(app: App) -> Collection:
    found = app.schema.find("users")
    assert found is not None
    return found


async def links(app: App) -> list[tuple[str, str, str]]:
    def read(conn: Any, schema: Any) -> list[tuple[str, str, str]]:
        rows = conn.execute(
            "SELECT recordRef, provider, providerId FROM _externalAuths ORDER BY created"
        ).fetchall()
        return [tuple(row) for row in rows]

    return await app.read(read)


# --- the form -----------------------------------------------------------------------------------


def test_the_form_is_bound_as_gos_json_decoder_binds_it() -> None:
    form = OAuth2Form.from_body(
        {"PROVIDER": "a", "provider": "oidc", "Code": "c", "codeverifier": "v", "redirectUrl": "r"}
    )
    assert (form.provider, form.code, form.code_verifier, form.redirect_url) == (
        "oidc",
        "c",
        "v",
        "r",  # the old name, when redirectURL is not given
    )
    both = OAuth2Form.from_body({"redirectURL": "new", "redirectUrl": "old", "createData": None})
    assert (both.redirect_url, both.create_data) == ("new", None)
    assert OAuth2Form.from_body({"createData": {"a": [1]}}).create_data == {"a": [1]}
    for wrong in ({"provider": 1}, {"code": ["x", 2]}, {"createData": "x"}, {"createData": [1]}):
        with pytest.raises(ApiError) as refused:
            OAuth2Form.from_body(wrong)
        assert refused.value.to_json() == {
            "data": {},
            "message": "An error occurred while loading the submitted data.",
            "status": 400,
        }


def test_validation_names_each_field() -> None:
    coll = Collection("people", "auth", options={"oauth2": {"providers": [{"name": "oidc"}]}})
    with pytest.raises(ApiError) as refused:
        oauth2_login.validate(coll, OAuth2Form(provider="gitlab"))
    assert refused.value.data == {
        "code": {"code": "validation_required", "message": "Cannot be blank."},
        "provider": {
            "code": "validation_invalid_provider",
            "message": "Provider with name gitlab is missing or is not enabled.",
            "params": {"name": "gitlab"},
        },
    }
    oauth2_login.validate(coll, OAuth2Form(provider="oidc", code="x"))  # no error


# --- logins -------------------------------------------------------------------------------------


def test_a_login_without_http_signs_up_then_finds_the_user(
    tmp_path: Path, idp: OidcProvider
) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        first = await oauth2_login.authenticate(
            app, users(app), await new_code(client, idp), RequestInfo(method="POST")
        )
        assert first.is_new and first.provider == "oidc"
        record = first.record
        assert (record["email"], record["verified"], record["name"]) == (
            "alice@example.com",
            True,
            "Alice Example",
        )
        meta = first.meta()
        assert meta["isNew"] is True and meta["id"] == "oidc-user-1"
        assert meta["rawUser"] == idp.claims and meta["accessToken"]
        assert await links(app) == [(record["id"], "oidc", "oidc-user-1")]

        second = await oauth2_login.authenticate(
            app, users(app), await new_code(client, idp), RequestInfo(method="POST")
        )
        assert not second.is_new and second.record["id"] == record["id"]
        assert await links(app) == [(record["id"], "oidc", "oidc-user-1")]

    run(tmp_path, idp, scenario)


def test_a_file_field_gets_no_avatar_and_says_so(
    tmp_path: Path, idp: OidcProvider, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        assert users(app).options["oauth2"]["mappedFields"]["avatarURL"] == "avatar"  # a file
        with caplog.at_level(logging.WARNING, logger="instance_runtime"):
            login = await oauth2_login.authenticate(
                app, users(app), await new_code(client, idp), RequestInfo(method="POST")
            )
        assert login.record["avatar"] == ""
        assert any("OAuth2 avatar not stored" in r.getMessage() for r in caplog.records)

    run(tmp_path, idp, scenario, mappedFields={"name": "name", "avatarURL": "avatar"})


def test_the_oauth2_hook_sees_the_sign_up_and_may_change_it(
    tmp_path: Path, idp: OidcProvider
) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        seen: list[tuple[bool, str, str]] = []

        async def rename(e: RecordAuthWithOAuth2RequestEvent) -> Any:
            seen.append((e.is_new_record, e.provider_name, e.oauth2_user.email))
            e.create_data = {**(e.create_data or {}), "name": "From A Hook"}
            result = await e.next()
            assert e.record is not None and e.record["name"] == "From A Hook"
            return result

        app.hooks.on_record_auth_with_oauth2_request.on("users").bind(rename)
        form = await new_code(client, idp)
        answer = await client.post(
            "/api/collections/users/auth-with-oauth2",
            json={
                "provider": form.provider,
                "code": form.code,
                "codeVerifier": form.code_verifier,
                "redirectURL": form.redirect_url,
            },
            headers={"Authorization": ""},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["record"]["name"] == "From A Hook"
        assert answer.json()["meta"]["isNew"] is True
        assert seen == [(True, "oidc", "alice@example.com")]

    run(tmp_path, idp, scenario, mappedFields={"name": "name"})


def test_an_oauth2_hook_that_refuses_leaves_nothing(tmp_path: Path, idp: OidcProvider) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        async def refuse(e: RecordAuthWithOAuth2RequestEvent) -> Any:
            raise ApiError(403, "No OAuth2 today.")

        app.hooks.on_record_auth_with_oauth2_request.bind(refuse)
        form = await new_code(client, idp)
        body = {"provider": "oidc", "code": form.code, "codeVerifier": form.code_verifier}
        answer = await client.post(
            "/api/collections/users/auth-with-oauth2",
            json={**body, "redirectURL": REDIRECT},
            headers={"Authorization": ""},
        )
        assert (answer.status_code, answer.json()["message"]) == (403, "No OAuth2 today.")
        assert await links(app) == []
        listed = await client.get("/api/collections/users/records")
        assert listed.json()["totalItems"] == 0

    run(tmp_path, idp, scenario)


def test_a_link_whose_record_is_gone_is_replaced(tmp_path: Path, idp: OidcProvider) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        first = await oauth2_login.authenticate(
            app, users(app), await new_code(client, idp), RequestInfo(method="POST")
        )
        gone = first.record["id"]
        # deleted behind the model hooks' back: its link stays (PocketBase never leaves one)
        await app.write(
            lambda conn, schema: conn.execute("DELETE FROM users WHERE id = ?", (gone,))
        )
        assert [link[0] for link in await links(app)] == [gone]
        second = await oauth2_login.authenticate(
            app, users(app), await new_code(client, idp), RequestInfo(method="POST")
        )
        assert second.is_new and second.record["id"] != gone
        assert await links(app) == [(second.record["id"], "oidc", "oidc-user-1")]

    run(tmp_path, idp, scenario)


# --- /api/oauth2-redirect and its seam ---------------------------------------------------------


class Broker:
    """The realtime broker's part of the seam: clients by id, each with the address it
    connected from (PocketBase's `RealtimeClientIPKey`), subscribed to `@oauth2`."""

    def __init__(self, clients: Mapping[str, str]) -> None:
        self.clients = dict(clients)
        self.sent: list[tuple[str, dict[str, str]]] = []

    def deliver(self, client_id: str, client_ip: str, message: Mapping[str, str]) -> bool:
        address = self.clients.pop(client_id, None)  # unsubscribed from @oauth2 either way
        if address is None or (address and address != client_ip):
            return False
        self.sent.append((client_id, dict(message)))
        return True


SUCCESS = "../_/#/auth/oauth2-redirect-success"
FAILURE = "../_/#/auth/oauth2-redirect-failure"


def test_without_realtime_every_redirect_fails(tmp_path: Path, idp: OidcProvider) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        answer = await client.get("/api/oauth2-redirect", params={"state": "c1", "code": "x"})
        assert (answer.status_code, answer.headers["location"], answer.text) == (307, FAILURE, "")
        posted = await client.post("/api/oauth2-redirect", data={"state": "c1", "code": "x"})
        assert (posted.status_code, posted.headers["location"]) == (303, FAILURE)

    run(tmp_path, idp, scenario)


def test_a_redirect_reaches_its_realtime_client_once(tmp_path: Path, idp: OidcProvider) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        broker = Broker({"c1": "127.0.0.1", "c2": "", "c3": "10.1.2.3", "c4": "127.0.0.1"})
        oauth2_redirect.set_redirect_receiver(app, broker)

        def page(answer: httpx.Response) -> tuple[int, str]:
            return answer.status_code, answer.headers["location"]

        ok = await client.get("/api/oauth2-redirect", params={"state": "c1", "code": "abc"})
        assert page(ok) == (307, SUCCESS)
        again = await client.get("/api/oauth2-redirect", params={"state": "c1", "code": "abc"})
        assert page(again) == (307, FAILURE)  # unsubscribed by the first
        wrong = await client.get("/api/oauth2-redirect", params={"state": "zz", "code": "abc"})
        assert page(wrong) == (307, FAILURE)
        denied = await client.get(
            "/api/oauth2-redirect", params={"state": "c2", "error": "access_denied"}
        )
        assert page(denied) == (307, FAILURE)  # the client is told, the page is a failure
        elsewhere = await client.get("/api/oauth2-redirect", params={"state": "c3", "code": "x"})
        assert page(elsewhere) == (307, FAILURE)  # another address started that login
        posted = await client.post(
            "/api/oauth2-redirect",
            data={"state": "c4", "code": "apple-code", "user": '{"name": {"firstName": "Ann", '
                  '"lastName": "Apple"}}'},
        )  # fmt: skip
        assert page(posted) == (303, SUCCESS)
        assert broker.sent == [
            ("c1", {"state": "c1", "code": "abc"}),
            ("c2", {"state": "c2", "code": "", "error": "access_denied"}),
            ("c4", {"state": "c4", "code": "apple-code"}),
        ]
        assert oauth2_redirect.pop_apple_name(app, "apple-code") == "Ann Apple"
        assert oauth2_redirect.pop_apple_name(app, "apple-code") is None  # taken once

    run(tmp_path, idp, scenario)


def test_apples_name_is_kept_only_for_a_delivered_form_post(
    tmp_path: Path, idp: OidcProvider
) -> None:
    async def scenario(client: httpx.AsyncClient, app: App) -> None:
        oauth2_redirect.set_redirect_receiver(app, Broker({"c1": "", "c2": ""}))
        user = '{"name": {"firstName": "Ann", "lastName": "Apple"}}'
        lost = await client.post(
            "/api/oauth2-redirect", data={"state": "nobody", "code": "k1", "user": user}
        )
        assert lost.headers["location"] == FAILURE
        as_json = await client.post(
            "/api/oauth2-redirect", json={"state": "c1", "code": "k2", "user": user}
        )
        assert as_json.headers["location"] == SUCCESS  # JSON has no `user` (json:"-")
        blank = await client.post(
            "/api/oauth2-redirect", data={"state": "c2", "code": "k3", "user": '{"name": {}}'}
        )
        assert blank.headers["location"] == SUCCESS
        for code in ("k1", "k2", "k3"):
            assert oauth2_redirect.pop_apple_name(app, code) is None

    run(tmp_path, idp, scenario)
