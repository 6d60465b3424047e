"""Random strings, password hashing (bcrypt) and HS256 JWTs, as PocketBase's tools/security.

Contract: `random_string` uses the OS CSPRNG; `hash_password` / `check_password` use bcrypt
(PocketBase's default cost 10 when `cost` is 0); `new_jwt` signs HS256 claims with an `exp`
`duration` seconds from now; `parse_jwt` returns the claims or None for any invalid token
(bad signature, expired, malformed) and never raises; `parse_unverified` reads claims without
checking the signature (to find which record's key verifies it).
"""

from __future__ import annotations

import base64
import secrets
import string
import time
from typing import Any

import bcrypt
import jwt
import orjson

ID_ALPHABET = string.ascii_lowercase + string.digits
ALNUM = string.ascii_letters + string.digits
DEFAULT_BCRYPT_COST = 10


def random_string(length: int, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_record_id() -> str:
    """A 15-character `[a-z0-9]` record id."""
    return random_string(15, ID_ALPHABET)


def hash_password(plain: str, cost: int = 0) -> str:
    rounds = cost if 4 <= cost <= 31 else DEFAULT_BCRYPT_COST
    return bcrypt.hashpw(plain.encode()[:72], bcrypt.gensalt(rounds)).decode()


def check_password(plain: str, hashed: str) -> bool:
    if not hashed:
        return False
    try:
        return bcrypt.checkpw(plain.encode()[:72], hashed.encode())
    except ValueError:
        return False


def new_jwt(claims: dict[str, Any], signing_key: str, duration: int) -> str:
    payload = dict(claims)
    payload["exp"] = int(time.time()) + int(duration)
    return jwt.encode(payload, signing_key, algorithm="HS256")


def parse_unverified(token: str) -> dict[str, Any] | None:
    """The claims of a well-formed three-part JWT (its payload a JSON object), unchecked.
    Decoded directly: PyJWT's unverified decode costs ten times more, on every request."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def parse_jwt(token: str, signing_key: str) -> dict[str, Any] | None:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, signing_key, algorithms=["HS256"], options={"require": ["exp"]}
        )
    except jwt.PyJWTError:
        return None
    return claims
