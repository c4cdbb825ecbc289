"""ExecFlow settings: one validated class, read from ``EXECFLOW_*`` environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_CORS_ORIGIN = "https://fluxcybers.polsia.app"


class Settings(BaseSettings):
    """Every knob ExecFlow reads. Invalid values fail at start, naming the field."""

    model_config = SettingsConfigDict(env_prefix="EXECFLOW_", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Where SQLite, keys and blobs live")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default: SQLite file in the data dir"
    )
    redis_url: str | None = Field(default=None, description="Redis for shared rate limits/queues")
    redis_prefix: str = Field(default="ef", description="Namespace for every Redis key")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # NoDecode: comma-separated env values reach the validator instead of failing JSON decoding
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_CORS_ORIGIN]
    )
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    auth_cache_seconds: float = Field(
        default=2.0, ge=0, description="How long a verified key is trusted without a DB lookup"
    )
    queue_backend: Literal["inprocess", "celery"] = "inprocess"
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    job_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A running job's lease; a worker renews it, others reclaim it when it lapses",
    )
    job_visibility_timeout: int = Field(
        default=6 * 3600,
        ge=60,
        description="Celery/Redis visibility timeout; longer than the longest job",
    )
    job_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra modules workers import to register job handlers (comma-separated)",
    )
    scheduler_enabled: bool = Field(
        default=True, description="Fire cron schedules from `execflow serve` (in-process backend)"
    )
    secret_key_path: Path | None = Field(
        default=None, description="Fernet key file for secrets at rest; default data_dir/secret.key"
    )
    ledger_key_path: Path | None = Field(
        default=None,
        description="Ed25519 checkpoint signing key (note format); default data_dir/ledger.key",
    )
    ledger_keyring_path: Path | None = Field(
        default=None,
        description="Trusted ledger verifier keys (retired signing keys), one per line; "
        "default data_dir/ledger.keyring",
    )
    ledger_origin: str = Field(
        default="execflow.local/audit-log",
        min_length=1,
        max_length=200,
        pattern=r"^[^\s+]+$",
        description="Checkpoint origin line and signing key name",
    )
    ledger_checkpoint_interval: float = Field(
        default=60.0, ge=0, description="Seconds between signed checkpoints (0: on demand only)"
    )
    outbound_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts/CIDRs outbound requests may reach despite SSRF rules",
    )
    # VaultShield (traffic plane, docs/traffic.md)
    vaultshield_pow_difficulty: int = Field(
        default=16, ge=1, le=32, description="Leading zero bits a challenge answer needs"
    )
    vaultshield_geoip_path: Path | None = Field(
        default=None, description="IP-to-country data for geo_block: an .mmdb or a CSV of ranges"
    )
    vaultshield_shield_rate_per_minute: int = Field(
        default=60, ge=1, description="Per-client limit while a site is in shield mode"
    )
    vaultshield_poll_seconds: float = Field(
        default=0.25, gt=0, le=60, description="How often proxies poll the rule version"
    )

    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [
            5.0,
            30.0,
            120.0,
            600.0,
            1800.0,
            3600.0,
            7200.0,
            14400.0,
            28800.0,
            36000.0,
        ],
        description="Seconds before each retry (about a day in all); jitter is added",
    )
    webhook_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    webhook_poll_seconds: float = Field(default=0.2, gt=0, le=60)
    webhook_disable_after_hours: float = Field(
        default=72.0, gt=0, description="Disable an endpoint that has failed for this long"
    )
    webhook_secret_grace_hours: float = Field(default=24.0, ge=0)
    webhook_concurrency: int = Field(default=8, ge=1, le=256)
    webhook_dispatcher: bool = Field(
        default=True,
        description="Run the webhook dispatcher inside `execflow serve` and `execflow worker`",
    )

    # executor (issue 4)
    playbooks_dir: Path | None = Field(
        default=None, description="Extra playbook YAML directory, loaded beside the shipped ones"
    )
    server_probe_interval: float = Field(
        default=300.0, ge=0, description="Seconds between server status probes; 0 disables them"
    )
    command_deny_patterns: list[str] = Field(
        default_factory=list, description="Extra regexes the command policy refuses (a JSON list)"
    )
    ssh_handshakes_per_host: int = Field(
        default=8, ge=1, le=100, description="Concurrent SSH handshakes per host (sshd MaxStartups)"
    )
    exec_max_output_bytes: int = Field(
        default=65_536, ge=1024, description="Cap on stdout and on stderr kept per execution"
    )

    # sentry (issue 8)
    sentry_scheduler: bool = Field(
        default=True, description="Run the Sentry V probe scheduler inside `execflow serve`"
    )
    sentry_concurrency: int = Field(default=20, ge=1, le=1000, description="Concurrent probes")

    # agents (issue 9)
    llm_backend: Literal["local", "openai"] = Field(
        default="local", description="Agents' chat model: offline local model or OpenAI-compatible"
    )
    llm_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint (key: EXECFLOW_LLM_API_KEY)"
    )
    llm_model: str | None = Field(default=None, description="Model name at llm_base_url")
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    agent_approval_ttl_seconds: int = Field(
        default=900, ge=1, description="Pending agent approvals expire (as rejected) after this"
    )
    agent_max_steps: int = Field(default=12, ge=1, le=100, description="Tool calls per task")

    @field_validator(
        "cors_origins", "outbound_allowlist", "webhook_retry_schedule", "job_modules", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                return json.loads(stripped)  # a JSON list
            return [part.strip() for part in stripped.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if value.startswith(("postgres://", "postgresql://")):
            _scheme, rest = value.split("://", 1)
            return f"postgresql+asyncpg://{rest}"
        if value.startswith("sqlite://") and "+aiosqlite" not in value:
            return value.replace("sqlite://", "sqlite+aiosqlite://", 1)
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a postgresql+asyncpg:// or sqlite+aiosqlite:// URL")
        return value

    @model_validator(mode="after")
    def _defaults_from_data_dir(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'execflow.db'}"
        if self.secret_key_path is None:
            self.secret_key_path = self.data_dir / "secret.key"
        if self.ledger_key_path is None:
            self.ledger_key_path = self.data_dir / "ledger.key"
        if self.ledger_keyring_path is None:
            self.ledger_keyring_path = self.data_dir / "ledger.keyring"
        return self

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


_current: Settings | None = None


def get_settings() -> Settings:
    """The settings in force: those given to ``configure``, else read once from the environment."""
    global _current
    if _current is None:
        _current = Settings()
    return _current


def configure(settings: Settings | None) -> None:
    """Replace the process-wide settings (CLI flags, tests); None re-reads the environment."""
    global _current
    _current = settings
