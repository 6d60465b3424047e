"""Shapes of the API's requests and responses (`XCreate` in, `XPublic` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationInfo, field_validator

from control_plane.env_rules import MAX_NAME_LENGTH, MAX_TOTAL_BYTES, MAX_VALUE_BYTES, MAX_VARS
from control_plane.names import NAME_PATTERN, name_problem
from control_plane.security import (
    BCRYPT_MAX_BYTES,
    PASSWORD_MAX,
    PASSWORD_MIN,
    password_problem,
)


def _valid_password(password: str) -> str:
    problem = password_problem(password)
    if problem:
        raise ValueError(f"the password {problem}")
    return password


class FieldProblem(BaseModel):
    field: str = Field(
        description='the input at fault: "name", "vars.API_KEY"; "body" for the body as a whole'
    )
    message: str = Field(description="what is wrong with it, never its value")
    code: str = Field(description='a stable reason: "string_too_short", "json_invalid", ...')


class ErrorPublic(BaseModel):
    """The body of every refusal of the API (`control_plane.api.errors`)."""

    status: int = Field(description="the HTTP status, repeated")
    code: str = Field(description='a stable reason for programs: "invalid", "not_found", ...')
    detail: str = Field(description="what went wrong and what to fix, for people")
    field: str | None = Field(None, description="the input at fault, when there is one")
    errors: list[FieldProblem] = Field(
        default_factory=list, description="every input at fault, with why (422)"
    )


class AccountCreate(BaseModel):
    email: EmailStr
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    invite: str | None = Field(None, description="invite code, when sign-up is by invitation")

    _password = field_validator("password")(_valid_password)


class AccountPublic(BaseModel):
    id: str
    email: str
    is_operator: bool = False
    suspended: bool = False
    created: datetime | None = None


class SessionCreate(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256)


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=PASSWORD_MAX)
    new_password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)

    _new_password = field_validator("new_password")(_valid_password)


class SessionPublic(BaseModel):
    token: str
    expires: datetime | None


MAX_TOKEN_INSTANCES = 100

TokenScope = Literal["full", "deploy"]


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scope: TokenScope = Field(
        default="full",
        description='"full": all the account may do; "deploy": only deploys (and reading) of '
        "its instances: for CI",
    )
    instances: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TOKEN_INSTANCES,
        description="scope deploy only: names of your instances it opens (at least one); "
        "omitted or null: all of them",
    )

    @field_validator("instances")
    @classmethod
    def _deploy_only(cls, instances: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if instances is not None and info.data.get("scope", "deploy") != "deploy":
            raise ValueError('instances limit a token of scope "deploy" only')
        return instances


class TokenPublic(BaseModel):
    id: str
    name: str
    prefix: str
    scope: TokenScope
    instances: list[str] | None = Field(
        description="scope deploy: the instances it opens (deleted ones left out); null: every "
        "instance of the account"
    )
    created: datetime
    last_used: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="shown once; store it now")


class InviteCreated(BaseModel):
    code: str


class InstanceCreate(BaseModel):
    name: str = Field(
        description=(
            "its subdomain: 3 to 40 lowercase letters, digits and '-', not starting or ending "
            "with '-', not a reserved name (www, api, admin, ...)"
        ),
        # documented here, checked by `name_problem` (whose messages say what to fix)
        json_schema_extra={"minLength": 3, "maxLength": 40, "pattern": NAME_PATTERN.pattern},
    )
    engine: str | None = None
    version: str | None = None
    superuser_password: str | None = Field(
        None,
        min_length=PASSWORD_MIN,
        max_length=BCRYPT_MAX_BYTES,
        description=f"at most {BCRYPT_MAX_BYTES} bytes in UTF-8 (bcrypt's limit)",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        problem = name_problem(name)
        if problem:
            raise ValueError(f"instance name {problem}")
        return name

    @field_validator("superuser_password")
    @classmethod
    def _valid_superuser_password(cls, password: str | None) -> str | None:
        problem = None if password is None else password_problem(password, bcrypt=True)
        if problem:
            raise ValueError(f"the superuser password {problem}")
        return password


class InstanceUpdate(BaseModel):
    version: str | None = None
    idle_timeout_s: int | None = Field(None, ge=0, le=30 * 24 * 3600)


class InstancePublic(BaseModel):
    id: str
    name: str
    url: str
    status: str
    status_reason: str
    desired: str
    engine: str
    version: str
    created: datetime
    started: datetime | None
    last_request: datetime | None
    memory_bytes: int | None
    idle_timeout_s: int | None
    hibernated_at: datetime | None = Field(None, description="since when it sleeps, if it does")
    asleep_s: int | None = Field(None, description="seconds asleep so far, if hibernated")
    # limits (control_plane.limits): effective values, and the last disk measurement
    disk_bytes: int | None = Field(None, description="allocated bytes of its folder, last seen")
    disk_measured: datetime | None = Field(None, description="when disk_bytes was measured")
    disk_limit_mb: int | None = Field(None, description="its disk quota in MB (null: none)")
    disk_state: str = Field("unknown", description="unknown, ok, warning or over (its quota)")
    max_processes: int | None = Field(None, description="processes and threads it may run")


class FleetInstancePublic(InstancePublic):
    owner_id: str
    owner_email: str
    pid: int | None
    port: int | None
    max_processes_override: int | None = Field(None, description="null: the fleet default")
    disk_limit_mb_override: int | None = Field(None, description="null: the fleet default")


class InstanceLimitsUpdate(BaseModel):
    """An operator's per-instance limits; a field left out stays, `null` means the fleet
    default again."""

    # documented here, refused by `LimitsService.set_limits` ("nothing to change")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    max_processes: int | None = Field(None, ge=16, le=65536)
    disk_limit_mb: int | None = Field(
        None, ge=0, le=16 * 1024 * 1024, description="MB; 0 = no quota (at most 16 TB)"
    )


class EnvUpdate(BaseModel):
    vars: dict[str, str] = Field(
        default_factory=dict,
        description=(
            f"at most {MAX_VARS} variables, names and values at most {MAX_TOTAL_BYTES} bytes in "
            f"all; a value at most {MAX_VALUE_BYTES} bytes in UTF-8. Names the platform or a "
            "runtime interprets are refused (LD_*, PF_*, PB_*, PYTHON*, PATH, HOME, GODEBUG, "
            "HTTP_PROXY, ...; `control_plane.env_rules`)"
        ),
        # documented here, checked by `env_rules.env_problems` (whose messages say what to fix)
        json_schema_extra={
            "maxProperties": MAX_VARS,
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": MAX_NAME_LENGTH},
            "additionalProperties": {"type": "string", "maxLength": MAX_VALUE_BYTES},
        },
    )


class EnvVarPublic(BaseModel):
    name: str
    preview: str = Field(description="the value masked: no character of it is ever shown")
    length_class: str = Field(description='how long the value is, roughly: "9–16 characters"')
    refused: str | None = Field(
        None, description="why the instance does not get this variable (a rule newer than it)"
    )


class EnvPublic(BaseModel):
    vars: list[EnvVarPublic]


class LogsPublic(BaseModel):
    lines: list[str]


class EngineInstall(BaseModel):
    engine: str
    version: str


class EnginePublic(BaseModel):
    name: str
    default_version: str
    versions: list[str]
