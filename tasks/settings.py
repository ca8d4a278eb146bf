"""Engine settings: the loop guard, step caps, the dispatcher, retries and the SMS provider."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from envconfig import Lowercase, Section
from tasks.egress_policy import IPNetwork, parse_allowed_networks


class EngineSettings(Section):
    """How the engine walks journeys; one field per environment variable."""

    # The loop guard and the step cap.
    loop_repeats: int = Field(3, ge=1, validation_alias="LOOP_GUARD_REPEATS")
    """More than this many runs of one node within loop_window_seconds is a loop."""
    loop_window_seconds: float = Field(60.0, ge=0, validation_alias="LOOP_GUARD_WINDOW_SECONDS")
    """The loop guard's window, in seconds."""
    max_steps: int = Field(1000, ge=1, validation_alias="MAX_STEPS_PER_CONTACT")
    """A hard cap on steps per journey contact: stops anything the loop guard misses."""

    # The due-step dispatcher.
    redispatch_grace_seconds: float = Field(30.0, ge=1, validation_alias="REDISPATCH_GRACE_SECONDS")
    """How long a published step may sit before the dispatcher may think its message lost; it
    doubles with each re-dispatch of the same step. A step is re-published only while the
    queues are quiet (REDISPATCH_QUIET_SECONDS): a step still queued behind a backlog is not
    lost."""
    redispatch_quiet_seconds: float = Field(30.0, ge=0, validation_alias="REDISPATCH_QUIET_SECONDS")
    """The step queues must have been seen empty for this long before a late step counts as
    lost: longer than a task holding a consumed message may run (TASK_SOFT_TIME_LIMIT)."""
    max_redispatches: int = Field(5, ge=1, validation_alias="MAX_REDISPATCHES")
    """After this many re-publications of one step, each made while the queues were quiet,
    the contact is FAILED ('stalled')."""

    # Batches.
    batch_size: int = Field(200, ge=1, le=1000, validation_alias="BATCH_SIZE")
    """Journey contacts per batch message: one task executes one node for this many contacts
    (and delivers this many messages). At most MAX_BATCH_SIZE."""
    bulk_batch_min: int = Field(50, ge=1, validation_alias="BULK_BATCH_MIN")
    """A batch of at least this many journey contacts (or messages) goes to the bulk lane
    (journeys.bulk); smaller ones, and everything upstream publishes, to journeys. One tenant's
    blast then never stands in front of other tenants' journeys (tasks/lanes.py)."""
    dispatch_batch_size: int = Field(500, ge=1, validation_alias="DISPATCH_BATCH_SIZE")
    """Due rows claimed per statement."""
    dispatch_max_batches: int = Field(20, ge=1, validation_alias="DISPATCH_MAX_BATCHES")
    """Batches one dispatch run claims at most."""
    enroll_max_contacts: int = Field(1000, ge=1, validation_alias="ENROLL_MAX_CONTACTS")
    """Contact ids one journeys.enroll message may carry."""

    # Retries of transient faults (set on the task classes when the app is created).
    max_retries: int = Field(10, ge=0, validation_alias="TASK_MAX_RETRIES")
    """Retries of a task before it fails for good."""
    retry_backoff_max: int = Field(300, ge=1, validation_alias="TASK_RETRY_BACKOFF_MAX_SECONDS")
    """The longest wait before one retry, in seconds."""

    # Retention.
    purge_after_days: int = Field(90, ge=0, validation_alias="PURGE_EXECUTIONS_AFTER_DAYS")
    """Executions older than this are deleted by the purge; 0 keeps them for ever."""
    purge_batch_size: int = Field(5000, ge=1, validation_alias="PURGE_BATCH_SIZE")
    """Rows one purge statement deletes."""

    # The SMS provider. sms_provider comes first: sms_provider_url's check depends on it.
    sms_provider: Annotated[Literal["log", "http"], Lowercase] = Field(
        "log", validation_alias="SMS_PROVIDER"
    )
    """log writes deliveries to the log; http POSTs JSON with an Idempotency-Key."""
    sms_provider_urls: SecretStr | None = Field(None, validation_alias="SMS_PROVIDER_URLS")
    """Instead of SMS_PROVIDER_URL: comma-separated provider URLs in failover order."""
    sms_provider_url: SecretStr | None = Field(None, validation_alias="SMS_PROVIDER_URL")
    """Where SMS_PROVIDER=http posts; it may carry credentials, so it is a secret."""
    sms_provider_timeout: float = Field(
        5.0, ge=0.1, validation_alias="SMS_PROVIDER_TIMEOUT_SECONDS"
    )
    """Seconds one provider call may take."""
    send_rate_horizon_seconds: float = Field(
        1.0, gt=0, le=10, validation_alias="SEND_RATE_HORIZON_SECONDS"
    )
    """With a tenant send rate: how far ahead one delivery task reserves send slots and waits
    for them; the rest of its batch is deferred (messages.deliver_after) and dispatched later."""
    delivery_lease_seconds: float = Field(120.0, ge=1, validation_alias="DELIVERY_LEASE_SECONDS")
    """How long a delivery holds the messages it claimed: longer than a delivery task may run
    (TASK_TIME_LIMIT_SECONDS), so a lease outlives only a dead worker."""
    sms_provider_failure_threshold: int = Field(
        3, ge=1, validation_alias="SMS_PROVIDER_FAILURE_THRESHOLD"
    )
    """A provider failing this many calls in a row is skipped by that process for the
    cool-down, then tried again."""
    sms_provider_cooldown_seconds: float = Field(
        30.0, ge=0.1, validation_alias="SMS_PROVIDER_COOLDOWN_SECONDS"
    )
    """How long a failing provider is skipped."""

    # Webhooks.
    webhook_allowed_networks: tuple[IPNetwork, ...] = Field(
        (), validation_alias="WEBHOOK_ALLOWED_NETWORKS"
    )
    """Networks (CIDRs, comma-separated) tenants' webhooks may reach besides public
    addresses; none by default (tasks/egress_policy.py)."""

    # The funnel view's refresh (tasks/stats.py; docs/operations.md says why both).
    stats_refresh_statement_timeout_ms: int = Field(
        300_000, ge=1, validation_alias="STATS_REFRESH_STATEMENT_TIMEOUT_MS"
    )
    """How long one refresh of the funnel view may run."""
    stats_refresh_lock_timeout_ms: int = Field(
        5_000, ge=1, validation_alias="STATS_REFRESH_LOCK_TIMEOUT_MS"
    )
    """How long a refresh waits for its lock before giving up until the next tick."""

    # Scheduled maintenance (tasks/maintenance.py; docs/operations.md, "Vacuum and analyze").
    maintenance_vacuum_min_dead_rows: int = Field(
        100_000, ge=0, validation_alias="MAINTENANCE_VACUUM_MIN_DEAD_ROWS"
    )
    """A hot table is vacuumed when it has at least this many dead rows ..."""
    maintenance_vacuum_dead_ratio: float = Field(
        0.05, ge=0, le=1, validation_alias="MAINTENANCE_VACUUM_DEAD_RATIO"
    )
    """... and they are at least this share of its rows."""
    maintenance_analyze_min_changed_rows: int = Field(
        50_000, ge=0, validation_alias="MAINTENANCE_ANALYZE_MIN_CHANGED_ROWS"
    )
    """A hot table is analyzed when at least this many rows changed since its last analyze ..."""
    maintenance_analyze_changed_ratio: float = Field(
        0.02, ge=0, validation_alias="MAINTENANCE_ANALYZE_CHANGED_RATIO"
    )
    """... and they are at least this share of its rows."""
    maintenance_lock_timeout_ms: int = Field(
        2_000, ge=1, validation_alias="MAINTENANCE_LOCK_TIMEOUT_MS"
    )
    """How long VACUUM or ANALYZE waits for its table lock before skipping the table."""
    maintenance_statement_timeout_ms: int = Field(
        1_800_000, ge=1, validation_alias="MAINTENANCE_STATEMENT_TIMEOUT_MS"
    )
    """How long one VACUUM or ANALYZE may run."""

    @field_validator("sms_provider_url", "sms_provider_urls")
    @classmethod
    def _provider_url_list(cls, url: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if url is not None:
            # Raises ValueError naming the entry, never the URL (it may carry credentials).
            provider_url_list(url.get_secret_value())
        if info.field_name == "sms_provider_url":  # validated after sms_provider_urls
            many = info.data.get("sms_provider_urls")
            if url is not None and many is not None:
                raise ValueError("set SMS_PROVIDER_URLS or SMS_PROVIDER_URL, not both")
            if info.data.get("sms_provider") == "http" and not (url or many):
                raise ValueError("required when SMS_PROVIDER=http (or SMS_PROVIDER_URLS)")
        return url

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        return parse_allowed_networks(value) if isinstance(value, str) else value

    @property
    def provider_urls(self) -> tuple[str, ...]:
        """The SMS providers in failover order (one for SMS_PROVIDER_URL)."""
        raw = self.sms_provider_urls or self.sms_provider_url
        return provider_url_list(raw.get_secret_value()) if raw else ()


def provider_url_list(raw: str) -> tuple[str, ...]:
    """Comma-separated provider URLs, checked: http(s) with a host, no provider twice (a
    provider is known by scheme, host, port and path: its name in messages.provider)."""
    urls = tuple(part.strip() for part in raw.split(","))
    seen: dict[tuple[str, str, int | None, str], int] = {}
    for position, url in enumerate(urls, start=1):
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            identity = (parts.scheme, parts.hostname or "", parts.port, parts.path)
        except ValueError:  # a malformed port or IPv6 literal
            valid = False
        if not valid:
            raise ValueError(f"entry {position} is not an http(s) URL with a host")
        if identity in seen:
            raise ValueError(f"entries {seen[identity]} and {position} name the same provider")
        seen[identity] = position
    return urls


_settings: EngineSettings | None = None


def engine_settings() -> EngineSettings:
    """The process's engine settings: the installed ones, else read from the environment once."""
    global _settings
    if _settings is None:
        _settings = EngineSettings.from_env()
    return _settings


def use_engine_settings(settings: EngineSettings | None) -> None:
    """Install `settings` for this process (the worker at start, tests, the demo); None forgets
    them, so the next engine_settings() reads the environment again."""
    global _settings
    _settings = settings


# A batch message carries ids only, about 45 bytes per journey contact: 1,000 keeps a message
# under 50 KB and a batch's two statements well under a second.
MAX_BATCH_SIZE = 1000
