"""`tools.security`: tokens as PyJWT makes them, random strings from the whole alphabet."""

from __future__ import annotations

import time

import jwt
import pytest

from instance_runtime.tools import security

KEY = "k" * 40


def test_a_token_is_the_one_pyjwt_makes() -> None:
    claims = {"collectionId": "pbc_1", "id": "abc", "type": "auth", "refreshable": True}
    token = security.new_jwt(claims, KEY, 100)
    parsed = security.parse_jwt(token, KEY)
    assert parsed is not None
    assert token == jwt.encode({**claims, "exp": parsed["exp"]}, KEY)
    decoded = jwt.decode(token, KEY, algorithms=["HS256"])
    assert decoded["id"] == "abc" and abs(decoded["exp"] - (time.time() + 100)) < 5


def test_a_token_is_refused_with_another_key_or_expired() -> None:
    token = security.new_jwt({"id": "abc"}, KEY, 100)
    assert security.parse_jwt(token, KEY + "x") is None
    assert security.parse_jwt(security.new_jwt({"id": "abc"}, KEY, -10), KEY) is None
    assert security.parse_jwt(token[:-2], KEY) is None


@pytest.mark.parametrize("alphabet", [security.ID_ALPHABET, security.ALNUM, "ab", "x"])
def test_random_strings_use_every_character_of_the_alphabet(alphabet: str) -> None:
    seen = "".join(security.random_string(50, alphabet) for _ in range(200))
    assert set(seen) == set(alphabet)
    assert len(security.random_string(15, alphabet)) == 15
    assert security.random_string(0, alphabet) == ""


def test_random_strings_of_a_long_alphabet() -> None:
    alphabet = "".join(chr(c) for c in range(0x100, 0x300))  # more than 256 characters
    value = security.random_string(20, alphabet)
    assert len(value) == 20 and set(value) <= set(alphabet)
