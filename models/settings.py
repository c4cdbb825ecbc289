"""ExecFlow settings: one validated class, read from ``EXECFLOW_*`` environment variables."""

from __future__ import annotations

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
    cors_origins: list[str] = Field(default_factory=lambda: [DEFAULT_CORS_ORIGIN])
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
    outbound_allowlist: list[str] = Field(
        default_factory=list,
        description="Hosts/CIDRs outbound requests may reach despite SSRF rules",
    )

    @field_validator("cors_origins", "outbound_allowlist", "job_modules", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                return value  # JSON list, pydantic parses it
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
