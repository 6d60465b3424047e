"""Every knob of the control plane, read from `PF_*` environment variables (and CLI flags).

Every setting has a working default on one machine: `pocketfleet serve` with no configuration
serves the API and the embedded proxy on http://localhost:8090, keeps its data under ./pf_data
and runs instances as child processes.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_POCKETBASE_VERSION = "0.40.6"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PF_", extra="ignore")

    http: str = Field("127.0.0.1:8090", description="HOST:PORT the control plane listens on")
    data_dir: Path = Field(Path("./pf_data"), description="where all state lives")
    domain: str = Field("localhost", description="instances are served at NAME.DOMAIN")
    public_scheme: Literal["http", "https"] = "http"
    public_port: int | None = Field(
        None, description="port shown in instance URLs; defaults to the port of PF_HTTP"
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the control DB; SQLite under data_dir if unset"
    )

    signup: Literal["open", "invite", "closed"] = "open"
    first_account_is_operator: bool = False
    default_quota: int = 10
    session_ttl_s: int = 14 * 24 * 3600
    login_max_failures: int = 5
    login_window_s: int = 300

    default_engine: str = "pocketbase"
    default_pocketbase_version: str = DEFAULT_POCKETBASE_VERSION

    driver: Literal["process"] = "process"
    instance_port_range: tuple[int, int] = (20000, 29999)
    instance_users: bool = Field(
        True, description="when running as root, run each instance as its own uid"
    )
    instance_uid_base: int = Field(
        200000, description="when running as root, instance N runs as uid base+N"
    )
    instance_memory_limit_mb: int = 512
    instance_max_open_files: int = 4096
    instance_log_max_bytes: int = 1_000_000
    start_timeout_s: float = 20.0
    stop_timeout_s: float = 10.0
    max_crash_restarts: int = 5
    trash_retention_days: int = 7

    reconcile_interval_s: float = 3.0
    sample_interval_s: float = Field(10.0, description="how often memory and activity are saved")

    @cached_property
    def host(self) -> str:
        return self.http.rsplit(":", 1)[0]

    @cached_property
    def port(self) -> int:
        return int(self.http.rsplit(":", 1)[1])

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'control.db').resolve()}"

    @property
    def instances_dir(self) -> Path:
        return self.data_dir / "instances"

    @property
    def engines_dir(self) -> Path:
        return self.data_dir / "engines"

    @property
    def trash_dir(self) -> Path:
        return self.data_dir / "trash"

    def instance_host(self, name: str) -> str:
        return f"{name}.{self.domain}"

    def instance_url(self, name: str) -> str:
        port = self.public_port if self.public_port is not None else self.port
        default = 443 if self.public_scheme == "https" else 80
        suffix = "" if port == default else f":{port}"
        return f"{self.public_scheme}://{self.instance_host(name)}{suffix}"
