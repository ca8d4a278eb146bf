"""Broker and worker settings from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from db.settings import EMBEDDED_DIR, ConfigError, env_number

EMBEDDED_BROKER_DIR = EMBEDDED_DIR / "broker"
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


@dataclass(frozen=True)
class WorkerSettings:
    broker_url: str
    embedded_broker: bool
    soft_time_limit: int = 30
    time_limit: int = 60
    visibility_timeout: int = 3600
    dispatch_interval: float = 2.0
    # How often beat refreshes the funnel view; 0 schedules no refresh.
    stats_refresh_interval: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if environ is None else environ
        broker = env.get("CELERY_BROKER_URL", "").strip() or env.get("REDIS_URL", "").strip()
        embedded = not broker
        if embedded:
            broker = "filesystem://"
        scheme = broker.split("://", 1)[0] if "://" in broker else ""
        if scheme not in BROKER_SCHEMES:
            name = "CELERY_BROKER_URL" if env.get("CELERY_BROKER_URL") else "REDIS_URL"
            raise ConfigError(name, f"unsupported broker URL scheme {scheme or broker!r}")
        soft = int(env_number(env, "TASK_SOFT_TIME_LIMIT_SECONDS", 30, minimum=1, integer=True))
        hard = int(env_number(env, "TASK_TIME_LIMIT_SECONDS", 60, minimum=1, integer=True))
        if hard <= soft:
            raise ConfigError("TASK_TIME_LIMIT_SECONDS", "must be greater than the soft limit")
        return cls(
            broker_url=broker,
            embedded_broker=embedded,
            soft_time_limit=soft,
            time_limit=hard,
            visibility_timeout=int(
                env_number(env, "BROKER_VISIBILITY_TIMEOUT_SECONDS", 3600, minimum=60, integer=True)
            ),
            dispatch_interval=env_number(
                env, "DISPATCH_INTERVAL_SECONDS", 2.0, minimum=0.1, integer=False
            ),
            stats_refresh_interval=env_number(
                env, "STATS_REFRESH_INTERVAL_SECONDS", 300.0, minimum=0, integer=False
            ),
        )


def embedded_broker_options(base: Path = EMBEDDED_BROKER_DIR) -> dict[str, object]:
    """The filesystem transport: a real broker between processes, with nothing to install."""
    for sub in ("queue", "processed"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(base / "queue"),
        "data_folder_out": str(base / "queue"),
        "processed_folder": str(base / "processed"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
