"""What the API says of nodes (`GET /api/nodes`, `GET /api/nodes/join-command`) and of moves
between them (`POST /api/instances/{name}/move`, `POST /api/nodes/{name}/drain`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class NodePublic(BaseModel):
    """One machine instances run on: a Swarm node with pocketfleet's label, or (process and
    docker drivers) this machine."""

    id: str = Field(description="the Swarm node's id; the hostname on one machine")
    name: str = Field(description="its hostname")
    address: str = Field(description="the address instances on it are dialled at")
    role: str = Field(description="manager, worker, or local (no swarm)")
    state: str = Field(description="ready, down, unknown, disconnected")
    availability: str = Field(description="active, pause or drain (new instances: active)")
    drained: bool = Field(
        False, description="drained by pocketfleet (`nodes drain`): no new or moved instances"
    )
    memory_bytes: int = Field(description="its memory")
    memory_free_bytes: int = Field(
        description="its memory less the memory limits of the instances placed on it"
    )
    disk_bytes: int | None = Field(None, description="its data folder's disk (null: unknown)")
    disk_free_bytes: int | None = None
    instances_running: int
    instances_asleep: int = Field(description="hibernated or stopped, placed on it")


class JoinCommandPublic(BaseModel):
    command: str = Field(description="what to run on a new machine to join the swarm")
    label_command: str = Field(
        description="what to run on a manager afterwards so that instances may go there"
    )


class MoveRequest(BaseModel):
    node: str = Field(min_length=1, max_length=128, description="the target node: id or name")


class MovePublic(BaseModel):
    instance: str = Field(description="the instance's name")
    node: str = Field(description="the id of the node it is on now")
    downtime_ms: float = Field(
        description="from the start of its stop to its first healthy answer on the target "
        "(0 when it was not running)"
    )


class DrainPublic(BaseModel):
    node: str = Field(description="the id of the drained node")
    moved: list[MovePublic]
