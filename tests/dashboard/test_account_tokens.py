"""The account page's API tokens over HTTP (no browser) against a real `pocketfleet serve`:
a deploy token for a chosen instance made with the form (it may only deploy), the scope in
the list, and the form's refusals shown beside their fields."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import ServeProcess, running_server
from tests.support.web import WebPerson

NAME = "tokens-site"


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with running_server() as server:
        yield server


class TokenMaker(WebPerson):
    """A dashboard user who makes API tokens with the account page's form."""

    def create_token(self, **fields: str) -> httpx.Response:
        return self.post("/account/tokens", fields)


@pytest.fixture(scope="module")
def owner(server: ServeProcess) -> Iterator[TokenMaker]:
    person = TokenMaker(server, "tokens@example.com", csrf_page="/account")
    assert person.api.post("/api/instances", json={"name": NAME}).status_code == 201
    yield person
    person.close()


def new_token(page: httpx.Response) -> str:
    found = re.search(
        r'id="new-token" class="mono" type="text" readonly value="([^"]+)"', page.text
    )
    assert found, page.text
    return found.group(1)


def scope_cell(page: httpx.Response, token_name: str) -> str:
    row = re.search(
        rf'<th scope="row">{re.escape(token_name)}</th>.*?class="token-scope">([^<]*)<',
        page.text,
        re.S,
    )
    assert row, page.text
    return html.unescape(row.group(1))


def field_error(page: httpx.Response, key: str) -> str:
    found = re.search(rf'<p class="error" id="e-{key}">([^<]*)</p>', page.text)
    assert found, page.text
    return html.unescape(found.group(1))


def test_a_deploy_token_for_one_instance(server: ServeProcess, owner: TokenMaker) -> None:
    made = owner.create_token(name="ci", scope="deploy", instances=f" {NAME} ")
    assert made.status_code == 201, made.text
    token = new_token(made)
    assert scope_cell(made, "ci") == f"deploy: {NAME}"
    with server.client(token) as ci:
        refused = ci.get("/api/instances")
        assert refused.status_code == 403 and "scope deploy" in refused.json()["detail"]
    listed = owner.api.get("/api/tokens").json()
    assert [(t["name"], t["scope"], t["instances"]) for t in listed] == [("ci", "deploy", [NAME])]


def test_a_full_token_is_the_default(owner: TokenMaker) -> None:
    made = owner.create_token(name="laptop")
    assert made.status_code == 201, made.text
    assert scope_cell(made, "laptop") == "full"
    every = owner.create_token(name="every", scope="deploy", instances="")
    assert every.status_code == 201, every.text
    assert scope_cell(every, "every") == "deploy: all your instances"


@pytest.mark.parametrize(
    ("fields", "key", "words"),
    [
        ({"scope": "full", "instances": NAME}, "token_instances", 'scope "deploy" only'),
        ({"scope": "deploy", "instances": "not-mine"}, "token_instances", "no instance named"),
        ({"scope": "admin"}, "token_scope", "Input should be"),
        ({"name": "", "scope": "deploy"}, "token_name", "at least 1 character"),
    ],
)
def test_refusals_are_shown_beside_their_field(
    owner: TokenMaker, fields: dict[str, str], key: str, words: str
) -> None:
    before = len(owner.api.get("/api/tokens").json())
    refused = owner.create_token(**{"name": "refused", **fields})
    assert refused.status_code == 422, refused.text
    assert words in field_error(refused, key)
    assert (
        'id="f-ssh_instances" name="instances" type="text" placeholder="app1, app2" value=""'
        in (refused.text)
    )  # what was typed stays in the token form only
    typed = {"name": "refused", **fields}["name"]
    assert f'name="name" type="text" placeholder="ci" maxlength="100" value="{typed}"' in (
        refused.text
    )
    assert len(owner.api.get("/api/tokens").json()) == before


def test_an_api_token_in_the_cookie_is_no_login(server: ServeProcess, owner: TokenMaker) -> None:
    token = new_token(owner.create_token(name="cookie", scope="deploy"))
    with server.client(follow_redirects=False) as web:
        web.cookies.set("pf_session", token)
        answer = web.get("/account")
        assert answer.status_code in (302, 303) and "/login" in answer.headers["location"]
