"""Random strings, password hashing (bcrypt) and HS256 JWTs, as PocketBase's tools/security.

Contract: `random_string` uses the OS CSPRNG; `hash_password` / `check_password` use bcrypt
(PocketBase's default cost 10 when `cost` is 0); `new_jwt` signs HS256 claims with an `exp`
`duration` seconds from now; `parse_jwt` returns the claims or None for any invalid token
(bad signature, expired, malformed) and never raises; `parse_unverified` reads claims without
checking the signature (to find which record's key verifies it).
"""

from __future__ import annotations

import secrets
import string
import time
from typing import Any

import bcrypt
import jwt

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
    try:
        claims: dict[str, Any] = jwt.decode(
            token, options={"verify_signature": False, "verify_exp": False}
        )
    except jwt.PyJWTError:
        return None
    return claims


def parse_jwt(token: str, signing_key: str) -> dict[str, Any] | None:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, signing_key, algorithms=["HS256"], options={"require": ["exp"]}
        )
    except jwt.PyJWTError:
        return None
    return claims
