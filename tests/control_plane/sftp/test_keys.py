"""SSH public keys as accounts hand them in (`control_plane.sftp.keys`): the accepted types and
sizes, OpenSSH's own fingerprints, and every malformed or unwanted input refused with a reason
that never repeats it."""

from __future__ import annotations

import base64
import struct
import subprocess
from pathlib import Path

import asyncssh
import pytest

from control_plane.sftp.keys import MAX_KEY_CHARS, KeyRefused, parse_public_key


def _public(alg: str, **options: int) -> str:
    key = asyncssh.generate_private_key(alg, comment="me@laptop", **options)
    return key.export_public_key("openssh").decode("ascii").strip()


def _refused(text: str) -> str:
    with pytest.raises(KeyRefused) as caught:
        parse_public_key(text)
    return str(caught.value)


def _blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(f)) + f for f in fields)).decode()


@pytest.mark.parametrize(
    ("alg", "options", "bits"),
    [
        ("ssh-ed25519", {}, 256),
        ("ecdsa-sha2-nistp256", {}, 256),
        ("ecdsa-sha2-nistp384", {}, 384),
        ("ecdsa-sha2-nistp521", {}, 521),
        ("ssh-rsa", {"key_size": 3072}, 3072),
        ("ssh-rsa", {"key_size": 4096}, 4096),
    ],
)
def test_accepted_types_and_sizes(alg: str, options: dict[str, int], bits: int) -> None:
    text = _public(alg, **options)
    parsed = parse_public_key(text)
    assert parsed.key_type == alg
    assert parsed.bits == bits
    assert parsed.comment == "me@laptop"
    assert parsed.canonical == " ".join(text.split()[:2])
    assert parsed.fingerprint.startswith("SHA256:") and "=" not in parsed.fingerprint


def test_fingerprint_is_the_one_ssh_keygen_prints(tmp_path: Path) -> None:
    key_file = tmp_path / "id"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "a b c", "-f", str(key_file)],
        check=True,
    )
    text = (tmp_path / "id.pub").read_text()
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "id.pub")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    parsed = parse_public_key(text)
    assert parsed.fingerprint == printed
    assert parsed.comment == "a b c"


def test_surrounding_space_blank_lines_and_comment_lines_are_fine() -> None:
    text = _public("ssh-ed25519")
    parsed = parse_public_key(f"\n# my laptop\n   {text}   \n\n")
    assert parsed.canonical == " ".join(text.split()[:2])


def test_no_comment_is_an_empty_comment() -> None:
    text = " ".join(_public("ssh-ed25519").split()[:2])
    assert parse_public_key(text).comment == ""


@pytest.mark.parametrize("bits", [1024, 2048])
def test_small_rsa_keys_are_refused(bits: int) -> None:
    assert "at least 3072 bits" in _refused(_public("ssh-rsa", key_size=bits))


def test_dsa_and_unknown_types_are_refused() -> None:
    dsa = "ssh-dss " + _blob(b"ssh-dss", b"\x01", b"\x02", b"\x03", b"\x04")
    assert "DSA" in _refused(dsa)
    assert "not an accepted key type" in _refused("ssh-ed448 " + _blob(b"ssh-ed448", b"x" * 57))
    fido = "sk-ssh-ed25519@openssh.com " + _blob(b"sk-ssh-ed25519@openssh.com", b"x" * 32)
    assert "security-key" in _refused(fido)


def test_certificates_are_refused() -> None:
    cert = "ssh-ed25519-cert-v01@openssh.com " + _blob(b"ssh-ed25519-cert-v01@openssh.com")
    assert "certificates" in _refused(cert)


@pytest.mark.parametrize(
    "options",
    ['command="echo hi"', 'from="10.0.0.1"', "no-pty,no-port-forwarding", "restrict"],
)
def test_authorized_keys_options_are_refused(options: str) -> None:
    assert "options" in _refused(f"{options} {_public('ssh-ed25519')}")


def test_a_private_key_is_refused_and_not_echoed() -> None:
    private = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    message = _refused(private)
    assert "private key" in message
    assert private.splitlines()[1][:20] not in message


def test_several_keys_at_once_are_refused() -> None:
    two = _public("ssh-ed25519") + "\n" + _public("ssh-ed25519")
    assert "one public key" in _refused(two)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n",
        "# only a comment",
        "ssh-ed25519",
        "ssh-ed25519 not*base64!",
        "ssh-ed25519 AAAA",  # decodes, but to no key
        "ssh-ed25519 " + _blob(b"ssh-ed25519", b"short"),
        "ssh-ed25519 QUJD=",  # bad padding
    ],
)
def test_malformed_keys_are_refused(text: str) -> None:
    _refused(text)


def test_the_declared_type_must_be_the_blobs() -> None:
    blob = _public("ssh-ed25519").split()[1]
    assert "malformed" in _refused(f"ecdsa-sha2-nistp256 {blob}")
    assert "malformed" in _refused(f"ssh-rsa {blob}")


def test_trailing_bytes_in_the_blob_are_refused() -> None:
    blob = base64.b64decode(_public("ssh-ed25519").split()[1])
    padded = base64.b64encode(blob + b"\x00\x00\x00\x01x").decode()
    assert "malformed" in _refused(f"ssh-ed25519 {padded}")


def test_control_characters_in_the_comment_are_refused() -> None:
    text = " ".join(_public("ssh-ed25519").split()[:2])
    assert "control characters" in _refused(f"{text} evil\x1b[2Jcomment")


def test_too_long_input_is_refused() -> None:
    assert str(MAX_KEY_CHARS) in _refused("ssh-ed25519 " + "A" * MAX_KEY_CHARS)


def test_refusals_never_quote_the_input() -> None:
    secret = "Zm9vYmFyc2VjcmV0"
    for text in (f"ssh-ed25519 {secret}", f"{secret} {secret}", f'command="{secret}" ssh-rsa x'):
        assert secret not in _refused(text)
