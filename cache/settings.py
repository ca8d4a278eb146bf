"""Cache settings: one field per environment variable, validated once, errors name the variable."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from envconfig import ConfigError, Section, split_url

__all__ = [
    "CacheSettings",
    "ConfigError",
    "cache_settings",
    "parse_redis_url",
    "use_cache_settings",
]

URL_SCHEMES = ("redis", "rediss", "unix")
# The prefix becomes part of every key; braces would break the cluster hash tag that follows it.
_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")


def parse_redis_url(raw: str, variable: str = "REDIS_URL") -> str:
    """Check the URL's shape; the message never repeats it, since it may hold a password."""
    try:
        parts = split_url(raw)
    except ValueError as exc:
        raise ConfigError(variable, str(exc)) from None
    if parts.scheme not in URL_SCHEMES:
        shown = parts.scheme or "none"
        raise ConfigError(variable, f"unsupported scheme {shown!r} (redis, rediss or unix)")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(variable, "unix:// needs a socket path, e.g. unix:///run/redis.sock")
        return raw
    if not parts.hostname:
        raise ConfigError(
            variable, f"{parts.scheme}:// needs a host, e.g. redis://127.0.0.1:6379/0"
        )
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise ConfigError(variable, f"the path must be a database number, got {database!r}")
    return raw


class CacheSettings(Section):
    """Where the cache lives and how long entries live."""

    url: SecretStr | None = Field(None, validation_alias="REDIS_URL")
    """The Redis of the node and tenant cache; None (unset) means the in-process cache."""
    node_ttl: int = Field(300, ge=1, validation_alias="CACHE_NODE_TTL_SECONDS")
    """Seconds a journey's nodes stay cached."""
    tenant_ttl: int = Field(600, ge=1, validation_alias="CACHE_TENANT_TTL_SECONDS")
    """Seconds a tenant stays cached."""
    socket_timeout: float = Field(0.25, gt=0, validation_alias="CACHE_SOCKET_TIMEOUT_SECONDS")
    """How long one Redis call may take, in seconds."""
    key_prefix: str = Field("jw", validation_alias="CACHE_KEY_PREFIX")
    """The first part of every key: letters, digits and _ . : - only."""
    retry_after: float = Field(5.0, ge=0, validation_alias="CACHE_RETRY_AFTER_SECONDS")
    """Seconds to bypass Redis after an error."""
    token_ttl: int = Field(86400, ge=1)
    """Seconds a fill token lives (not read from the environment)."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            parse_redis_url(url.get_secret_value())
        return url

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, prefix: str) -> str:
        if not _PREFIX_PATTERN.fullmatch(prefix):
            raise ValueError("use letters, digits and _ . : - only")
        return prefix

    @property
    def embedded(self) -> bool:
        return self.url is None

    @property
    def redis_url(self) -> str | None:
        """The URL, password included, for the Redis client only: never log it."""
        return self.url.get_secret_value() if self.url is not None else None


_settings: CacheSettings | None = None


def cache_settings() -> CacheSettings:
    """The process's cache settings: the installed ones, else read from the environment once."""
    global _settings
    if _settings is None:
        _settings = CacheSettings.from_env()
    return _settings


def use_cache_settings(settings: CacheSettings | None) -> None:
    """Install `settings` for this process (the worker at start, tests, the demo); None forgets
    them, so the next cache_settings() reads the environment again."""
    global _settings
    _settings = settings
