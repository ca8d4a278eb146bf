"""Engine settings: the loop guard, step caps, the dispatcher, retries and outbound HTTP."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from db.settings import ConfigError, env_number
from tasks.egress_policy import IPNetwork, parse_allowed_networks


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
    # SMS_PROVIDER_URL, kept for callers that name one provider; sms_provider_urls wins.
    # URLs may carry credentials: kept out of repr, so a logged settings object shows none.
    sms_provider_url: str | None = field(default=None, repr=False)
    sms_provider_timeout: float = 5.0
    # Failover order (SMS_PROVIDER_URLS); see provider_urls.
    sms_provider_urls: tuple[str, ...] = field(default=(), repr=False)
    # A provider failing this many times in a row is skipped for the cool-down, then tried again.
    sms_provider_failure_threshold: int = 3
    sms_provider_cooldown_seconds: float = 30.0
    # Networks a webhook may reach besides public addresses (WEBHOOK_ALLOWED_NETWORKS).
    webhook_allowed_networks: tuple[IPNetwork, ...] = ()

    @property
    def provider_urls(self) -> tuple[str, ...]:
        if self.sms_provider_urls:
            return self.sms_provider_urls
        return (self.sms_provider_url,) if self.sms_provider_url else ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineSettings:
        env = os.environ if environ is None else environ

        def whole(name: str, default: int, minimum: int = 0) -> int:
            return int(env_number(env, name, default, minimum=minimum, integer=True))

        provider = env.get("SMS_PROVIDER", "").strip().lower() or "log"
        if provider not in ("log", "http"):
            raise ConfigError("SMS_PROVIDER", f"expected log or http, got {provider!r}")
        provider_urls = _provider_urls(env)
        if provider == "http" and not provider_urls:
            raise ConfigError(
                "SMS_PROVIDER_URL", "required when SMS_PROVIDER=http (or SMS_PROVIDER_URLS)"
            )
        try:
            allowed = parse_allowed_networks(env.get("WEBHOOK_ALLOWED_NETWORKS", ""))
        except ValueError as exc:
            raise ConfigError("WEBHOOK_ALLOWED_NETWORKS", str(exc)) from None
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
            sms_provider_url=provider_urls[0] if provider_urls else None,
            sms_provider_timeout=env_number(
                env, "SMS_PROVIDER_TIMEOUT_SECONDS", 5.0, minimum=0.1, integer=False
            ),
            sms_provider_urls=provider_urls,
            sms_provider_failure_threshold=whole("SMS_PROVIDER_FAILURE_THRESHOLD", 3, 1),
            sms_provider_cooldown_seconds=env_number(
                env, "SMS_PROVIDER_COOLDOWN_SECONDS", 30.0, minimum=0.1, integer=False
            ),
            webhook_allowed_networks=allowed,
        )


def _provider_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    """SMS_PROVIDER_URLS (comma-separated, in failover order), or SMS_PROVIDER_URL as a list
    of one. Errors never echo a URL: it may carry credentials."""
    many = env.get("SMS_PROVIDER_URLS", "").strip()
    one = env.get("SMS_PROVIDER_URL", "").strip()
    if many and one:
        raise ConfigError(
            "SMS_PROVIDER_URLS", "set SMS_PROVIDER_URLS or SMS_PROVIDER_URL, not both"
        )
    name = "SMS_PROVIDER_URLS" if many else "SMS_PROVIDER_URL"
    urls = tuple(part.strip() for part in (many or one).split(",")) if many or one else ()
    seen: dict[tuple[str, str, int | None, str], int] = {}
    for position, url in enumerate(urls, start=1):
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            # A provider is known by scheme, host, port and path (its name in messages.provider).
            identity = (parts.scheme, parts.hostname or "", parts.port, parts.path)
        except ValueError:  # a malformed port or IPv6 literal
            valid = False
        if not valid:
            raise ConfigError(name, f"entry {position} is not an http(s) URL with a host")
        if identity in seen:
            raise ConfigError(
                name, f"entries {seen[identity]} and {position} name the same provider"
            )
        seen[identity] = position
    return urls


_settings: EngineSettings | None = None


def engine_settings() -> EngineSettings:
    global _settings
    if _settings is None:
        _settings = EngineSettings.from_env()
    return _settings


def use_engine_settings(settings: EngineSettings | None) -> None:
    global _settings
    _settings = settings
