"""Passwords and bearer tokens (the login throttle is `control_plane.login_throttle`)."""

from __future__ import annotations

import hashlib
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

PASSWORD_MIN = 10
PASSWORD_MAX = 256
# bcrypt hashes the first 72 bytes only (PocketBase's superusers, and our runtime's, use it;
# Go's bcrypt refuses a longer password outright): a superuser password must fit in them.
BCRYPT_MAX_BYTES = 72


def password_problem(password: str, *, bcrypt: bool = False) -> str | None:
    """Why `password` cannot be a password, or None: the one rule for accounts' passwords
    and (with `bcrypt`) for the superuser passwords handed to an engine. A password is
    `PASSWORD_MIN` to `PASSWORD_MAX` characters of text any program can take: no NUL (no C
    string holds it), valid Unicode (no lone surrogate, which UTF-8 cannot encode); with
    `bcrypt`, at most `BCRYPT_MAX_BYTES` bytes in UTF-8. The password is never quoted."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long"
    if "\0" in password:
        return "must not hold the NUL character"
    try:
        encoded = password.encode()
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate)"
    if bcrypt and len(encoded) > BCRYPT_MAX_BYTES:
        return (
            f"must be at most {BCRYPT_MAX_BYTES} bytes in UTF-8 (the limit of bcrypt, which "
            f"the engine hashes it with); it is {len(encoded)} bytes"
        )
    return None


TOKEN_PREFIX = "pf_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@cache
def _dummy_hash() -> str:
    """Verifying against this keeps a login for an unknown email as slow as for a known one."""
    return _hasher.hash("pocketfleet-dummy-password")


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return (
            _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
