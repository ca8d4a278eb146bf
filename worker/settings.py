"""The worker's settings sections, and `Settings`: every section of every package, validated
together once per process at start (worker/__init__.py) and installed where each package reads
its own (db_settings(), cache_settings(), engine_settings())."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cache.settings import CacheSettings, use_cache_settings
from db.settings import EMBEDDED_DIR, DbSettings, use_db_settings
from envconfig import ConfigError, Flag, Lowercase, Section, split_url
from tasks.settings import EngineSettings, use_engine_settings

__all__ = [
    "BudgetSettings",
    "ConfigError",
    "LoggingSettings",
    "MetricsSettings",
    "Settings",
    "WorkerSettings",
    "current_settings",
    "embedded_broker_options",
    "load_settings",
    "use_settings",
]

EMBEDDED_BROKER_DIR = EMBEDDED_DIR / "broker"
EMBEDDED_BROKER_URL = "filesystem://"
BROKER_SCHEMES = (
    "redis",
    "rediss",
    "amqp",
    "amqps",
    "pyamqp",
    "memory",
    "filesystem",
    "sqla+sqlite",
)
# CELERY_BROKER_URL, else the cache's Redis, else the embedded filesystem broker.
BROKER_VARIABLES = ("CELERY_BROKER_URL", "REDIS_URL")


class WorkerSettings(Section):
    """The broker and the Celery worker process."""

    # The broker.
    broker_url: SecretStr = Field(
        SecretStr(EMBEDDED_BROKER_URL), validation_alias=AliasChoices(*BROKER_VARIABLES)
    )
    """Redis or RabbitMQ; it may carry a password, so it is a secret."""
    embedded_broker: bool = False
    """True when no broker URL was given: the filesystem broker (not read from the environment)."""
    visibility_timeout: int = Field(
        3600, ge=60, validation_alias="BROKER_VISIBILITY_TIMEOUT_SECONDS"
    )
    """Redis only: seconds before an unacknowledged message is delivered again."""

    # Time limits. soft_time_limit comes first: time_limit's check depends on it.
    soft_time_limit: int = Field(30, ge=1, validation_alias="TASK_SOFT_TIME_LIMIT_SECONDS")
    """Seconds before a task is interrupted (and retried)."""
    time_limit: int = Field(60, ge=1, validation_alias="TASK_TIME_LIMIT_SECONDS")
    """Seconds before a task's process is killed; more than the soft limit."""

    # The process.
    dispatch_interval: float = Field(2.0, ge=0.1, validation_alias="DISPATCH_INTERVAL_SECONDS")
    """Seconds between two runs of journeys.dispatch_due (beat), on its own queue."""
    task_events: Flag = Field(False, validation_alias="WORKER_SEND_TASK_EVENTS")
    """Send task events (and task-sent events) always. Off by default: they cost a quarter or
    more of a no-op task's throughput, and Flower turns worker events on at run time
    (`enable_events`) while it watches. `celery worker -E` turns them on too."""
    publish_retry_seconds: float = Field(35.0, ge=0, validation_alias="PUBLISH_RETRY_SECONDS")
    """How long a publish keeps retrying while the broker is unreachable (a restart of up to
    30 s); after that the step is marked due for the dispatcher at once."""
    stats_refresh_interval: float = Field(
        300.0, ge=0, validation_alias="STATS_REFRESH_INTERVAL_SECONDS"
    )
    """Seconds between two refreshes of the funnel view (beat); 0 schedules none."""
    maintenance_interval: float = Field(
        3600.0, ge=0, validation_alias="MAINTENANCE_INTERVAL_SECONDS"
    )
    """Seconds between two runs of scheduled maintenance (beat); 0 schedules none."""
    concurrency: int | None = Field(None, ge=1, validation_alias="WORKER_CONCURRENCY")
    """Prefork children, or None for Celery's default (the CPU count); -c/--concurrency wins."""

    @model_validator(mode="before")
    @classmethod
    def _embedded_without_a_broker(cls, data: Any) -> Any:
        if isinstance(data, dict) and not any(
            data.get(key) for key in ("broker_url", *BROKER_VARIABLES)
        ):
            return {"embedded_broker": True, **data}
        return data

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, url: SecretStr) -> SecretStr:
        # Never repeats the URL: it may hold a password.
        raw = url.get_secret_value()
        if "://" not in raw:
            raise ValueError("not a URL (e.g. redis://host:6379/0 or amqp://user@host:5672//)")
        scheme = split_url(raw).scheme
        if scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"unsupported broker URL scheme {scheme!r} ({', '.join(BROKER_SCHEMES)})"
            )
        return url

    @field_validator("time_limit")
    @classmethod
    def _hard_over_soft(cls, hard: int, info: ValidationInfo) -> int:
        soft = info.data.get("soft_time_limit")
        if soft is not None and hard <= soft:
            raise ValueError(f"must be greater than the soft limit ({soft}), got {hard}")
        return hard

    @property
    def broker(self) -> str:
        """The broker URL, password included, for Celery and kombu only: never log it."""
        return self.broker_url.get_secret_value()


class MetricsSettings(Section):
    """The Prometheus endpoint of the worker's parent process (worker/metrics_server.py)."""

    port: int | None = Field(None, ge=1, le=65535, validation_alias="METRICS_PORT")
    """Serve /metrics on this port; None (unset) serves nothing."""
    address: str = Field("0.0.0.0", validation_alias="METRICS_ADDRESS")
    """The address /metrics listens on."""
    directory: str | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    """prometheus-client's multiprocess directory; None: a fresh temporary one."""

    @property
    def enabled(self) -> bool:
        return self.port is not None


class LoggingSettings(Section):
    """How the worker, beat, their children and `journey-worker listen` write log records."""

    log_format: Annotated[Literal["text", "json"], Lowercase] = Field(
        "text", validation_alias="LOG_FORMAT"
    )
    """text: Celery's lines; json: one JSON object per record (worker/logging_config.py)."""


class BudgetSettings(Section):
    """The database connection budget a worker checks at start (worker/budget.py)."""

    connection_budget: int | None = Field(None, ge=1, validation_alias="DB_CONNECTION_BUDGET")
    """This worker's share of the server's (or PgBouncer's) connections; None: not checked."""


class Settings(BaseModel):
    """Every section of every package: what one process runs with."""

    model_config = ConfigDict(frozen=True)

    db: DbSettings
    cache: CacheSettings
    engine: EngineSettings
    worker: WorkerSettings
    metrics: MetricsSettings
    logging: LoggingSettings
    budget: BudgetSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every section from `environ` (default os.environ), validated in this order; the first
        bad variable raises ConfigError naming it."""
        env = os.environ if environ is None else environ
        return cls(
            db=DbSettings.from_env(env),
            cache=CacheSettings.from_env(env),
            engine=EngineSettings.from_env(env),
            worker=WorkerSettings.from_env(env),
            metrics=MetricsSettings.from_env(env),
            logging=LoggingSettings.from_env(env),
            budget=BudgetSettings.from_env(env),
        )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raises ConfigError(variable, problem) for the first
    bad one. The worker, beat and the command line call it once, at start."""
    return Settings.from_env(environ)


_settings: Settings | None = None


def current_settings() -> Settings:
    """The process's settings: the installed ones, else loaded (and installed) now."""
    if _settings is None:
        use_settings(load_settings())
    assert _settings is not None
    return _settings


def use_settings(settings: Settings | None) -> None:
    """Install `settings` for this process, each package's section included, so every reader
    sees the same validated values. None forgets them all: the next reader reads the
    environment again (tests that run a command as a fresh process would)."""
    global _settings
    _settings = settings
    use_db_settings(settings.db if settings else None)
    use_cache_settings(settings.cache if settings else None)
    use_engine_settings(settings.engine if settings else None)


def embedded_broker_options(base: Path = EMBEDDED_BROKER_DIR) -> dict[str, object]:
    """The filesystem transport: a real broker between processes, with nothing to install."""
    for sub in ("queue", "processed", "control"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(base / "queue"),
        "data_folder_out": str(base / "queue"),
        "processed_folder": str(base / "processed"),
        # The exchange tables; kombu's default is `control/` in the current directory.
        "control_folder": str(base / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
