"""SSH public keys as accounts hand them in: one OpenSSH line, checked and made canonical.

`parse_public_key(text)` takes what `ssh-keygen` wrote to `id_*.pub` (`TYPE BASE64 [COMMENT]`)
and returns a `ParsedKey`: its type, the canonical `TYPE BASE64` line (no comment), the
SHA256 fingerprint as OpenSSH prints it (`SHA256:...`, unpadded base64) and the comment.

Accepted: `ssh-ed25519`, `ecdsa-sha2-nistp256|384|521` and `ssh-rsa` of at least
`MIN_RSA_BITS` bits. Refused (`KeyRefused`, with a message that never quotes the input):
anything else (DSA, certificates, security-key types), a line with `authorized_keys` options
(`command=`, `from=`, ...: the SFTP server has no use for them and would not enforce them, so a
key that names them is refused rather than silently widened), a private key, several keys at
once, bad base64, a blob whose embedded type differs from the declared one, a blob with
trailing bytes, a comment with control characters, and anything longer than `MAX_KEY_CHARS`.

Pure: no I/O, no database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

import asyncssh

MIN_RSA_BITS = 3072
MAX_KEY_CHARS = 16_384  # an RSA key of 16384 bits is ~2,800 characters
MAX_COMMENT_CHARS = 100

ACCEPTED_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
# types OpenSSH knows that we refuse by name (so the message can say why)
_KNOWN_REFUSED = {
    "ssh-dss": "DSA keys are obsolete",
    "sk-ssh-ed25519@openssh.com": "security-key (FIDO) keys are not supported",
    "sk-ecdsa-sha2-nistp256@openssh.com": "security-key (FIDO) keys are not supported",
}
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


class KeyRefused(ValueError):
    """The text is not an SSH public key this server takes; `str(exc)` says why."""


@dataclass(frozen=True)
class ParsedKey:
    key_type: str  # "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", ...
    canonical: str  # "TYPE BASE64", no comment
    fingerprint: str  # "SHA256:..." (OpenSSH's form)
    comment: str  # "" when none
    bits: int  # the key's size (256 for ed25519)


def fingerprint_of(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob: `SHA256:` + unpadded base64."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def _one_line(text: str) -> str:
    if len(text) > MAX_KEY_CHARS:
        raise KeyRefused(f"a public key is at most {MAX_KEY_CHARS} characters")
    if "PRIVATE KEY" in text:
        raise KeyRefused("this is a private key: send the public one (the .pub file)")
    if "\x00" in text:
        raise KeyRefused("a public key holds no NUL character")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise KeyRefused("no public key given: send the line of the .pub file")
    if len(lines) > 1:
        raise KeyRefused("send one public key at a time (one line of the .pub file)")
    return lines[0]


def _comment(tokens: list[str]) -> str:
    comment = " ".join(tokens)
    if any(not ch.isprintable() for ch in comment):
        raise KeyRefused("the key's comment holds control characters")
    return comment[:MAX_COMMENT_CHARS]


def _bits(key: asyncssh.SSHKey, key_type: str) -> int:
    if key_type == "ssh-ed25519":
        return 256
    if key_type.startswith("ecdsa-sha2-nistp"):
        return int(key_type.removeprefix("ecdsa-sha2-nistp"))
    size: int = key.pyca_key.key_size  # type: ignore[union-attr]
    return size


def parse_public_key(text: str) -> ParsedKey:
    """The key in `text` (one OpenSSH public key line), checked; `KeyRefused` otherwise."""
    tokens = _one_line(text).split()
    key_type = tokens[0]
    if key_type not in ACCEPTED_TYPES:
        if any(token in ACCEPTED_TYPES or token in _KNOWN_REFUSED for token in tokens[1:]):
            raise KeyRefused(
                "authorized_keys options (command=, from=, ...) are not supported: "
                "send the key line alone (TYPE BASE64 [COMMENT])"
            )
        if key_type in _KNOWN_REFUSED:
            raise KeyRefused(f"{_KNOWN_REFUSED[key_type]}; use ed25519, ecdsa or rsa")
        if key_type.endswith("-cert-v01@openssh.com"):
            raise KeyRefused("certificates are not supported: send the plain public key")
        raise KeyRefused(
            "not an accepted key type: use ssh-ed25519, ecdsa-sha2-nistp256/384/521 "
            f"or ssh-rsa of at least {MIN_RSA_BITS} bits"
        )
    if len(tokens) < 2 or not _BASE64.match(tokens[1]):
        raise KeyRefused("malformed public key: TYPE must be followed by the key in base64")
    try:
        blob = base64.b64decode(tokens[1], validate=True)
    except (binascii.Error, ValueError):
        raise KeyRefused("malformed public key: the base64 does not decode") from None
    try:
        key = asyncssh.import_public_key(f"{key_type} {tokens[1]}")
    except (asyncssh.KeyImportError, ValueError, TypeError):
        raise KeyRefused("malformed public key: the key data does not decode") from None
    if key.get_algorithm() != key_type:
        raise KeyRefused("malformed public key: the key data is of another type than TYPE")
    if key.public_data != blob:
        raise KeyRefused("malformed public key: the key data has trailing bytes")
    bits = _bits(key, key_type)
    if key_type == "ssh-rsa" and bits < MIN_RSA_BITS:
        raise KeyRefused(f"RSA keys must have at least {MIN_RSA_BITS} bits (this one: {bits})")
    return ParsedKey(
        key_type=key_type,
        canonical=f"{key_type} {base64.b64encode(blob).decode('ascii')}",
        fingerprint=fingerprint_of(blob),
        comment=_comment(tokens[2:]),
        bits=bits,
    )
