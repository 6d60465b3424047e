"""OAuth2 against both engines: auth-with-oauth2 through PocketBase's generic `oidc` provider and
real OpenID Connect providers on loopback (oidc_relay.py; the login and consent pages driven
from Python), sign-up with `createData` and `oauth2.mappedFields`, linking to an existing user
(by `_externalAuths`, by email, or the caller's own auth), an unverified provider email, the
refusals (a reused code, a wrong PKCE verifier, a denied consent, bodies PocketBase refuses) and
`/api/oauth2-redirect` refusing a wrong state. The scenarios share one pair of engines (they
keep apart by collection names)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import AUTH_OAUTH2


@pytest.fixture(scope="module")
def oauth2_conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    runs = Conformance(tmp_path_factory.mktemp("auth-oauth2"), oidc=True)
    try:
        yield runs
    finally:
        runs.stop()


@pytest.mark.parametrize("scenario", AUTH_OAUTH2)
def test_auth_oauth2(oauth2_conformance: Conformance, engine: str, scenario: str) -> None:
    oauth2_conformance.check(scenario, engine)
