"""Every knob of the control plane, read from `PF_*` environment variables (and CLI flags).

Every setting has a working default on one machine: `pocketfleet serve` with no configuration
serves the API and the embedded proxy on http://localhost:8090, keeps its data under ./pf_data
and runs instances as child processes.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    # secrets at rest (control_plane/sealing.py): env values and pending superuser passwords
    # are sealed in the control DB with this key, else with PF_DATA_DIR/secret.key
    secret_key: str | None = Field(
        None,
        repr=False,
        description="Fernet key(s), comma-separated (first seals); unset: PF_DATA_DIR/secret.key",
    )

    signup: Literal["open", "invite", "closed"] = "open"
    first_account_is_operator: bool = False
    default_quota: int = 10
    session_ttl_s: int = 14 * 24 * 3600
    login_max_failures: int = 5
    login_window_s: int = 300

    # the control plane's own doors (control_plane/login_throttle.py, control_plane/api/:
    # client_address.py, apex_hosts.py, body_limit.py; cookies in dashboard/web.py)
    login_max_delay_s: float = Field(
        10.0, ge=0, description="longest wait added to logins of an email failing from many places"
    )
    trusted_proxies: Annotated[list[IPvAnyNetwork] | None, NoDecode] = Field(
        None,
        description="addresses/CIDRs whose X-Forwarded-For is believed (comma-separated); "
        "unset: loopback with PF_PROXY=caddy, none otherwise",
    )
    apex_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="more host names the API and dashboard answer on (comma-separated)",
    )
    max_body_bytes: int = Field(1 << 20, ge=0, description="largest request body of the API")
    body_read_timeout_s: float = Field(
        30.0, gt=0, description="a request body that stalls this long gets 408"
    )

    @field_validator("trusted_proxies", "apex_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """`a, b` or a JSON list; `` is an empty list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    default_engine: str = "pocketbase"
    default_pocketbase_version: str = DEFAULT_POCKETBASE_VERSION

    driver: Literal["process", "docker", "swarm"] = Field(
        "process",
        description="where instances run: child processes, one container each on the "
        "Docker engine at PF_DOCKER_HOST (control_plane/drivers/docker.py), or one Swarm "
        "service each through the swarm manager at PF_DOCKER_HOST (drivers/swarm.py)",
    )
    docker_host: str = Field(
        "unix:///var/run/docker.sock",
        description="the Docker engine's API (PF_DRIVER=docker), or a Swarm manager's (swarm)",
    )
    swarm_node: str = Field(
        "",
        description="PF_DRIVER=swarm: the id of the node new instances are placed on when no "
        "placement chose one; empty = the manager's own node",
    )
    swarm_instance_address: str = Field(
        "127.0.0.1",
        description="PF_DRIVER=swarm: the address instances listen on (host networking) and "
        "are dialled at; loopback on a one-node swarm",
    )
    swarm_node_engines: dict[str, str] = Field(
        default_factory=dict,
        description="PF_DRIVER=swarm: the Docker engine API of each node other than the "
        'manager\'s, by node id or hostname ({"worker-1": "ssh://root@10.0.0.2"}; unix://, '
        "ssh:// or tcp:// on a private network), used only to load pocketfleet's images there "
        "(drivers/swarm_images.py); a node without one must hold them already",
    )
    instance_port_range: tuple[int, int] = (20000, 29999)
    instance_users: bool = Field(
        True, description="when running as root, run each instance as its own uid"
    )
    instance_uid_base: int = Field(
        200000, description="when running as root, instance N runs as uid base+N"
    )
    instance_memory_limit_mb: int = 512
    instance_max_open_files: int = 4096
    instance_max_processes: int = Field(
        256, ge=16, description="processes and threads an instance may run (per-instance too)"
    )
    instance_cpu_weight: int = Field(
        100, ge=1, le=10000, description="CPU share under contention (cgroup weight; 100 = equal)"
    )
    instance_log_max_bytes: int = 1_000_000
    start_timeout_s: float = 20.0
    stop_timeout_s: float = 10.0
    max_crash_restarts: int = 5
    trash_retention_days: int = 7

    # hibernation (control_plane/hibernation.py, control_plane/scheduler.py)
    idle_timeout_s: int = Field(
        600, ge=0, description="hibernate instances idle this long (0 = never); per instance too"
    )
    idle_sweep_interval_s: float = Field(30.0, gt=0, description="how often idleness is checked")
    hibernate_drain_s: float = Field(
        10.0, ge=0, description="how long requests in flight may finish before hibernating"
    )
    wake_timeout_s: float = Field(
        15.0, gt=0, description="a request held for a wake gets 503 + Retry-After after this"
    )
    wake_concurrency: int = Field(8, ge=1, description="instances starting at once on wakes")
    request_log_max_days: int = Field(
        5, ge=0, description="days of request logs an instance keeps (PocketBase logs.maxDays)"
    )
    sandbox: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "run every instance process in a bubblewrap sandbox (own mount, pid, ipc and uts "
            "namespaces; control_plane/drivers/sandbox.py): auto = when running as root with "
            "bwrap installed, on = refuse to start instances without it, off = never"
        ),
    )
    zygote: bool = Field(
        True, description="fork instances of engines that have a zygote (pocketfleet) from it"
    )

    reconcile_interval_s: float = 3.0
    sample_interval_s: float = Field(10.0, description="how often memory and activity are saved")
    metrics_interval_s: float = Field(
        60.0, description="how often a chart point (requests, memory) is kept per instance"
    )
    metrics_retention_h: int = Field(48, description="hours of chart points kept")

    # per-instance disk usage and quota (control_plane/disk_usage.py, control_plane/limits.py,
    # control_plane/services/limits.py); operators override the quota per instance
    instance_disk_limit_mb: int = Field(
        1024, ge=0, description="disk quota of each instance folder in MB (0 = none)"
    )
    instance_disk_warn_percent: int = Field(
        90, ge=1, le=100, description="usage shown as a warning from this share of the quota"
    )
    disk_usage_interval_s: float = Field(
        60.0, gt=0, description="how often running instances' folders are measured"
    )
    disk_usage_max_entries: int = Field(
        200_000, ge=100, description="files and folders one measurement looks at, at most"
    )

    # backups (control_plane/backups): to S3 when PF_S3_BUCKET is set, else PF_DATA_DIR/backups
    s3_endpoint: str | None = Field(None, description="S3 API URL (unset: AWS)")
    s3_bucket: str | None = Field(None, description="bucket for snapshots and replicas")
    s3_region: str = "us-east-1"
    s3_access_key: str | None = Field(None, repr=False)
    s3_secret_key: str | None = Field(None, repr=False)
    s3_path_style: bool = Field(False, description="path-style URLs (MinIO, moto, ...)")
    s3_part_size_mb: int = Field(16, ge=5, description="multipart part size")
    s3_retry_attempts: int = Field(5, ge=1, description="tries of one S3 call")
    s3_retry_wait_s: float = Field(0.5, description="first back-off between tries")
    backup_schedule: str = Field(
        "@daily", description="fleet default: crontab, @hourly/@daily/@weekly or @every 6h"
    )
    backup_min_interval_s: int = Field(3600, description="shortest per-instance schedule")
    backup_keep_last: int = Field(7, ge=1)
    backup_keep_daily: int = 7
    backup_keep_weekly: int = 4
    backup_keep_monthly: int = 6
    backup_concurrency: int = Field(2, ge=1, description="snapshots running at once")
    backup_overdue_grace_s: int = Field(3600, description="late by this much = overdue")
    replication: bool = Field(True, description="continuous replication with Litestream")
    replication_sync_interval_s: float = 1.0
    replication_instances_per_process: int = Field(
        64,
        ge=0,
        description="replicated instances per Litestream process before the fleet is split "
        "over more (2, 4, ... 16; 0: always 16)",
    )
    replication_retention_h: int = Field(24, description="point-in-time restore window")
    replica_drill_interval_h: float = Field(
        24.0, ge=0, description="rebuild and check each replica this often (0: never)"
    )

    # the proxy in front of instances (proxy/embedded.py, or Caddy: proxy/caddy/, see
    # control_plane/caddy_frontend.py) and custom domains (control_plane/domains/)
    proxy: Literal["embedded", "caddy"] = Field(
        "embedded", description="embedded: PF_HTTP serves instances; caddy: Caddy does"
    )
    caddy_admin: str = Field(
        "",
        description="unix socket of Caddy's admin API, PATH or unix//PATH (TCP is refused); "
        "empty: PF_DATA_DIR/caddy/admin.sock",
    )
    caddy_http: str = Field(":80", description="where Caddy serves plain HTTP")
    caddy_https: str = Field(":443", description="where Caddy serves HTTPS")
    caddy_tls: Literal["auto", "acme", "internal", "off"] = Field(
        "auto", description="certificates: auto = internal CA for local domains, else acme"
    )
    caddy_acme_email: str | None = Field(None, description="ACME account email (optional)")
    start_caddy: bool = Field(False, description="run Caddy as a supervised child")
    caddy_bin: str = Field("caddy", description="the caddy binary (for PF_START_CADDY)")
    caddy_activity_addr: str = Field(
        "127.0.0.1:0", description="UDP HOST:PORT receiving Caddy's access log (0: any port)"
    )
    caddy_check_interval_s: float = Field(
        0.5, gt=0, description="how often Caddy is checked for a lost config (restart)"
    )
    caddy_activity_poll_s: float = Field(
        5.0, gt=0, description="how often Caddy's in-flight counts are read"
    )
    domain_http_verification: bool = Field(
        False, description="custom domains may also be verified by an HTTP token (else DNS only)"
    )
    domain_resolve: dict[str, str] = Field(
        default_factory=dict,
        description='addresses to use instead of DNS when verifying domains: {"host": "ip"}',
    )

    # files of instances' code folders (control_plane/files): the files API and SFTP
    files_max_file_mb: int = Field(
        50, ge=1, description="largest file in pb_hooks, pb_migrations, pb_public (MB)"
    )
    files_max_files: int = Field(
        10_000, ge=1, description="files and folders the three code folders hold together"
    )

    # deploys of the code folders (control_plane/deploys)
    deploys_keep: int = Field(10, ge=1, description="newest deploys kept for rollback per instance")
    deploy_max_mb: int = Field(200, ge=1, description="largest deploy archive accepted (MB)")

    # scheduled jobs: HTTP requests to instances' routes, through the proxy (control_plane/jobs)
    job_min_interval_s: float = Field(
        10.0, ge=0, description="shortest interval between two runs of a job's schedule"
    )
    jobs_per_instance: int = Field(20, ge=0, description="jobs an instance may have")
    job_runs_keep: int = Field(100, ge=1, description="newest runs kept per job")
    job_attempts: int = Field(3, ge=1, description="attempts of a run (5xx, timeouts: again)")
    job_retry_wait_s: float = Field(
        1.0, ge=0, description="back-off before a run's second attempt (doubled after)"
    )

    # SFTP into instances' code folders (control_plane/sftp)
    sftp: str = Field(
        "127.0.0.1:2222",
        description="HOST:PORT of the SFTP server (host key in PF_DATA_DIR); empty or off: none",
    )

    @field_validator("sftp")
    @classmethod
    def _sftp_address(cls, value: str) -> str:
        text = value.strip()
        if text.lower() in ("", "off"):
            return text
        _host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("PF_SFTP is HOST:PORT (or :PORT, or off)")
        return text

    @property
    def sftp_listen(self) -> tuple[str, int] | None:
        """(host, port) of PF_SFTP, or None when it is off."""
        text = self.sftp.strip()
        if text.lower() in ("", "off"):
            return None
        host, _, port = text.rpartition(":")
        return host.strip("[]"), int(port)  # "" (from ":PORT"): every address

    @property
    def sftp_host_key_file(self) -> Path:
        """The SFTP server's ed25519 host key (made once, 0600)."""
        return self.data_dir / "ssh_host_ed25519_key"

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
    def secret_key_file(self) -> Path:
        """The key that seals secrets at rest when PF_SECRET_KEY is unset (created 0600)."""
        return self.data_dir / "secret.key"

    @property
    def instances_dir(self) -> Path:
        return self.data_dir / "instances"

    @property
    def engines_dir(self) -> Path:
        return self.data_dir / "engines"

    @property
    def deploys_dir(self) -> Path:
        """Deploys kept for rollback (`INSTANCE_ID/DEPLOY_ID.tar.gz`) and their work folders."""
        return self.data_dir / "deploys"

    @property
    def trash_dir(self) -> Path:
        return self.data_dir / "trash"

    @property
    def backups_dir(self) -> Path:
        """The local backup store (when no S3 bucket is configured)."""
        return self.data_dir / "backups"

    @property
    def backup_work_dir(self) -> Path:
        """Scratch space of snapshots and restores (same filesystem as the instances)."""
        return self.data_dir / "backup-work"

    @property
    def activity_socket(self) -> Path:
        """Where engines report their own activity (`control_plane.activity_reports`)."""
        return (self.data_dir / "run" / "activity.sock").absolute()

    def instance_host(self, name: str) -> str:
        return f"{name}.{self.domain}"

    @property
    def served_port(self) -> int:
        """The port clients reach instances on when PF_PUBLIC_PORT is unset: PF_HTTP's, or
        with Caddy the port of PF_CADDY_HTTPS (PF_PUBLIC_SCHEME=https) or PF_CADDY_HTTP."""
        if self.proxy != "caddy":
            return self.port
        listen = self.caddy_https if self.public_scheme == "https" else self.caddy_http
        return int(listen.rsplit(":", 1)[1])

    def instance_url(self, name: str) -> str:
        port = self.public_port if self.public_port is not None else self.served_port
        default = 443 if self.public_scheme == "https" else 80
        suffix = "" if port == default else f":{port}"
        return f"{self.public_scheme}://{self.instance_host(name)}{suffix}"
