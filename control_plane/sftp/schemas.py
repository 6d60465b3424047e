"""Shapes of the SSH-key API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from control_plane.sftp.keys import MAX_KEY_CHARS

MAX_LISTED_INSTANCES = 100


class SshKeyCreate(BaseModel):
    public_key: str = Field(
        min_length=1,
        max_length=MAX_KEY_CHARS,
        description=(
            "one OpenSSH public key line, as in `~/.ssh/id_ed25519.pub`: `TYPE BASE64 "
            "[COMMENT]`; ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least 3072 "
            "bits; no authorized_keys options"
        ),
        examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... me@laptop"],
    )
    name: str | None = Field(
        default=None,
        max_length=100,
        description="a label for the key; defaults to the key's comment, else its type",
    )
    instances: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LISTED_INSTANCES,
        description="names of your instances the key opens (at least one); omitted or null: "
        "all of them",
    )


class SshKeyPublic(BaseModel):
    id: str
    name: str
    key_type: str
    fingerprint: str = Field(description="SHA256 fingerprint, as `ssh-keygen -lf` prints it")
    public_key: str = Field(description="the key, canonical (`TYPE BASE64`, no comment)")
    instances: list[str] | None = Field(
        description="the instances it opens; null: every instance of the account"
    )
    created: datetime
    last_used: datetime | None = Field(description="the last SFTP login with it")


class SshHostKeyPublic(BaseModel):
    """How clients recognise this server: check the fingerprint on first connection."""

    key_type: str
    fingerprint: str = Field(description="SHA256 fingerprint of the SFTP server's host key")
    public_key: str
    address: str | None = Field(description="HOST:PORT the SFTP server listens on; null: off")
    port: int | None
