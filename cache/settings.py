"""Cache settings read from the environment, validated once, with errors that name the variable."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

URL_SCHEMES = ("redis", "rediss", "unix")
# The prefix becomes part of every key; braces would break the cluster hash tag that follows it.
_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")


class ConfigError(ValueError):
    """A configuration value is malformed; the message names the variable.

    Same shape as db.settings.ConfigError, defined here so the cache never imports db.
    """

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def parse_redis_url(raw: str, variable: str = "REDIS_URL") -> str:
    """Check the URL's shape; the message never repeats it, since it may hold a password."""
    try:
        parts = urlsplit(raw)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise ConfigError(variable, "not a valid URL (bad port or brackets)") from None
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


def _number(
    environ: Mapping[str, str],
    name: str,
    default: float,
    *,
    integer: bool,
    minimum: float,
    exclusive: bool = False,
) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(name, f"expected {kind}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(name, f"expected a finite number, got {raw!r}")
    if value < minimum or (exclusive and value == minimum):
        relation = "greater than" if exclusive else "at least"
        raise ConfigError(name, f"must be {relation} {minimum:g}, got {raw!r}")
    return value


@dataclass(frozen=True)
class CacheSettings:
    """Where the cache lives and how long entries live; url None means the in-process cache."""

    url: str | None
    node_ttl: int = 300
    tenant_ttl: int = 600
    socket_timeout: float = 0.25
    key_prefix: str = "jw"
    retry_after: float = 5.0
    token_ttl: int = 86400

    def __post_init__(self) -> None:
        # Direct construction (tests, demo) gets the same guarantees as from_env.
        if self.url is not None:
            parse_redis_url(self.url, "url")
        for name in ("node_ttl", "tenant_ttl", "token_ttl"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1 second, got {getattr(self, name)!r}")
        if not self.socket_timeout > 0:
            raise ConfigError("socket_timeout", f"must be positive, got {self.socket_timeout!r}")
        if not self.retry_after >= 0:
            raise ConfigError("retry_after", f"must be at least 0, got {self.retry_after!r}")
        if not _PREFIX_PATTERN.fullmatch(self.key_prefix):
            raise ConfigError("key_prefix", "use letters, digits and _ . : - only")

    @property
    def embedded(self) -> bool:
        return self.url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CacheSettings:
        env = os.environ if environ is None else environ
        raw_url = env.get("REDIS_URL", "").strip()
        prefix = env.get("CACHE_KEY_PREFIX", "").strip() or "jw"
        if not _PREFIX_PATTERN.fullmatch(prefix):
            raise ConfigError("CACHE_KEY_PREFIX", "use letters, digits and _ . : - only")
        return cls(
            url=parse_redis_url(raw_url) if raw_url else None,
            node_ttl=int(_number(env, "CACHE_NODE_TTL_SECONDS", 300, integer=True, minimum=1)),
            tenant_ttl=int(_number(env, "CACHE_TENANT_TTL_SECONDS", 600, integer=True, minimum=1)),
            socket_timeout=_number(
                env, "CACHE_SOCKET_TIMEOUT_SECONDS", 0.25, integer=False, minimum=0, exclusive=True
            ),
            key_prefix=prefix,
            retry_after=_number(env, "CACHE_RETRY_AFTER_SECONDS", 5.0, integer=False, minimum=0),
        )
