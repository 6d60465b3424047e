"""Random strings, password hashing (bcrypt) and HS256 JWTs, as PocketBase's tools/security.

Contract: `random_string` uses the OS CSPRNG; `hash_password` / `check_password` use bcrypt
(PocketBase's default cost 10 when `cost` is 0); `new_jwt` signs HS256 claims with an `exp`
`duration` seconds from now (the very token PyJWT would make); `parse_jwt` returns the claims
or None for any invalid token (bad signature, expired, malformed) and never raises;
`parse_unverified` reads claims without checking the signature (to find which record's key
verifies it).
"""

from __future__ import annotations

import base64
import hmac
import os
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
    """`length` characters of `alphabet`, each uniformly from the OS CSPRNG: random bytes
    below the largest multiple of the alphabet's size (the rest dropped, so no character is
    likelier), taken modulo it; one `os.urandom` call instead of a `secrets.choice` per
    character (a record's id was a twentieth of a create's time)."""
    size = len(alphabet)
    if not 0 < size <= 256:
        return "".join(secrets.choice(alphabet) for _ in range(length))
    limit = 256 - 256 % size
    out: list[str] = []
    while len(out) < length:
        for byte in os.urandom(length + length // 2 + 8):
            if byte < limit:
                out.append(alphabet[byte % size])
                if len(out) == length:
                    break
    return "".join(out)


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


_JWT_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")  # PyJWT's


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def new_jwt(claims: dict[str, Any], signing_key: str, duration: int) -> str:
    """The HS256 token PyJWT's `jwt.encode` makes (same header, compact JSON payload), signed
    here directly: PyJWT first tries every key as a JSON web key and PEM, a fifth of the cost
    of an auth refresh."""
    payload = dict(claims)
    payload["exp"] = int(time.time()) + int(duration)
    signing_input = _JWT_HEADER + b"." + _b64(orjson.dumps(payload))
    signature = hmac.digest(signing_key.encode(), signing_input, "sha256")
    return (signing_input + b"." + _b64(signature)).decode("ascii")


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
