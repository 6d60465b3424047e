"""The caller's SSH public keys (for SFTP into their instances) and the SFTP server's host key."""

from __future__ import annotations

from fastapi import Response, status

from control_plane.api.deps import CP, CurrentAccount
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.sftp.schemas import SshHostKeyPublic, SshKeyCreate, SshKeyPublic

router = api_router("ssh-keys", 401, 403)


@router.get("/api/ssh-keys/host")
async def host_key(cp: CP, account: CurrentAccount) -> SshHostKeyPublic:
    """The SFTP server's host key and address: check the fingerprint on first connection."""
    return cp.ssh_keys.host_public()


@router.post("/api/ssh-keys", status_code=status.HTTP_201_CREATED, responses=error_responses(409))
async def add_key(cp: CP, account: CurrentAccount, data: SshKeyCreate) -> SshKeyPublic:
    """Add a public key; it opens all your instances over SFTP, or only `instances`."""
    return (await cp.ssh_keys.public([await cp.ssh_keys.add(account, data)]))[0]


@router.get("/api/ssh-keys")
async def list_keys(cp: CP, account: CurrentAccount) -> list[SshKeyPublic]:
    return await cp.ssh_keys.public(await cp.ssh_keys.list_for(account))


@router.delete(
    "/api/ssh-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def remove_key(cp: CP, account: CurrentAccount, key_id: str) -> Response:
    """Forget a key; SFTP sessions opened with it are closed."""
    await cp.ssh_keys.remove(account, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
