"""Engine settings: the loop guard, step caps, the dispatcher and retries."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from db.settings import ConfigError, env_number


@dataclass(frozen=True)
class EngineSettings:
    # More than loop_repeats runs of one node within loop_window_seconds is a loop.
    loop_repeats: int = 3
    loop_window_seconds: float = 60.0
    # A hard cap on steps per journey contact stops anything the loop guard misses.
    max_steps: int = 1000
    # How long an ACTIVE step may sit before the dispatcher assumes its message was lost.
    redispatch_grace_seconds: float = 300.0
    # After this many re-publications of one step the contact is FAILED ('stalled').
    max_redispatches: int = 5
    dispatch_batch_size: int = 500
    dispatch_max_batches: int = 20
    enroll_max_contacts: int = 1000
    max_retries: int = 10
    retry_backoff_max: int = 300
    # Executions older than this are deleted by the daily purge; 0 keeps them for ever.
    purge_after_days: int = 90
    purge_batch_size: int = 5000
    sms_provider: str = "log"
    sms_provider_url: str | None = None
    sms_provider_timeout: float = 5.0
    # The funnel view's refresh (tasks/stats.py; docs/operations.md says why both).
    stats_refresh_statement_timeout_ms: int = 300_000
    stats_refresh_lock_timeout_ms: int = 5_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineSettings:
        env = os.environ if environ is None else environ

        def whole(name: str, default: int, minimum: int = 0) -> int:
            return int(env_number(env, name, default, minimum=minimum, integer=True))

        provider = env.get("SMS_PROVIDER", "").strip().lower() or "log"
        if provider not in ("log", "http"):
            raise ConfigError("SMS_PROVIDER", f"expected log or http, got {provider!r}")
        provider_url = env.get("SMS_PROVIDER_URL", "").strip() or None
        if provider == "http" and not provider_url:
            raise ConfigError("SMS_PROVIDER_URL", "required when SMS_PROVIDER=http")
        return cls(
            loop_repeats=whole("LOOP_GUARD_REPEATS", 3, 1),
            loop_window_seconds=env_number(env, "LOOP_GUARD_WINDOW_SECONDS", 60.0, integer=False),
            max_steps=whole("MAX_STEPS_PER_CONTACT", 1000, 1),
            redispatch_grace_seconds=env_number(
                env, "REDISPATCH_GRACE_SECONDS", 300.0, minimum=1, integer=False
            ),
            max_redispatches=whole("MAX_REDISPATCHES", 5, 1),
            dispatch_batch_size=whole("DISPATCH_BATCH_SIZE", 500, 1),
            dispatch_max_batches=whole("DISPATCH_MAX_BATCHES", 20, 1),
            enroll_max_contacts=whole("ENROLL_MAX_CONTACTS", 1000, 1),
            max_retries=whole("TASK_MAX_RETRIES", 10),
            retry_backoff_max=whole("TASK_RETRY_BACKOFF_MAX_SECONDS", 300, 1),
            purge_after_days=whole("PURGE_EXECUTIONS_AFTER_DAYS", 90),
            purge_batch_size=whole("PURGE_BATCH_SIZE", 5000, 1),
            sms_provider=provider,
            sms_provider_url=provider_url,
            sms_provider_timeout=env_number(
                env, "SMS_PROVIDER_TIMEOUT_SECONDS", 5.0, minimum=0.1, integer=False
            ),
            stats_refresh_statement_timeout_ms=whole(
                "STATS_REFRESH_STATEMENT_TIMEOUT_MS", 300_000, 1
            ),
            stats_refresh_lock_timeout_ms=whole("STATS_REFRESH_LOCK_TIMEOUT_MS", 5_000, 1),
        )


_settings: EngineSettings | None = None


def engine_settings() -> EngineSettings:
    global _settings
    if _settings is None:
        _settings = EngineSettings.from_env()
    return _settings


def use_engine_settings(settings: EngineSettings | None) -> None:
    global _settings
    _settings = settings
