"""Database settings read from the environment, validated once, with clear errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

EMBEDDED_DIR = Path(".journey-worker")
EMBEDDED_DATABASE_URL = f"sqlite:///{EMBEDDED_DIR / 'journey.db'}"


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def env_number(
    environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0, integer: bool
) -> float:
    """Read a number from `environ[name]`, or `default`; raise ConfigError naming `name`."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(name, f"expected {kind}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {raw!r}")
    return value


def env_flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def parse_database_url(raw: str) -> URL:
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError("DATABASE_URL", f"not a SQLAlchemy URL: {raw!r}") from None
    backend = url.get_backend_name()
    if backend not in {"postgresql", "sqlite"}:
        raise ConfigError(
            "DATABASE_URL", f"unsupported database {backend!r} (postgresql or sqlite)"
        )
    if backend == "postgresql" and url.get_driver_name() in {"psycopg2", "asyncpg", "pg8000"}:
        raise ConfigError("DATABASE_URL", "use the psycopg 3 driver: postgresql+psycopg://...")
    if backend == "postgresql":
        # A bare postgresql:// would pick psycopg2, which is not installed.
        url = url.set(drivername="postgresql+psycopg")
    return url


SESSION_SETTINGS_MODES = ("startup", "checkout", "none")


@dataclass(frozen=True)
class DbSettings:
    """How the worker connects. Defaults suit one prefork child running one task at a time."""

    url: URL
    pool_size: int = 1
    max_overflow: int = 1
    pool_timeout: float = 10.0
    pool_recycle: int = 1800
    pool_pre_ping: bool = False
    statement_timeout_ms: int = 60_000
    idle_in_transaction_timeout_ms: int = 60_000
    lock_timeout_ms: int = 10_000
    # startup: -c options in the connection packet (plain PostgreSQL);
    # checkout: SET on each new connection (PgBouncer session pooling);
    # none: the role or PgBouncer sets them (PgBouncer transaction pooling).
    session_settings: str = "startup"
    pgbouncer: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def connections_per_process(self) -> int:
        return self.pool_size + self.max_overflow

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DbSettings:
        env = os.environ if environ is None else environ
        raw_url = env.get("DATABASE_URL", "").strip()
        url = parse_database_url(raw_url) if raw_url else make_url(EMBEDDED_DATABASE_URL)
        mode = env.get("DB_SESSION_SETTINGS", "").strip().lower() or None
        pgbouncer = env_flag(env, "DB_PGBOUNCER", False)
        if mode is None:
            mode = "none" if pgbouncer else "startup"
        if mode not in SESSION_SETTINGS_MODES:
            raise ConfigError(
                "DB_SESSION_SETTINGS", f"expected one of {', '.join(SESSION_SETTINGS_MODES)}"
            )
        return cls(
            url=url,
            pool_size=int(env_number(env, "DB_POOL_SIZE", 1, minimum=1, integer=True)),
            max_overflow=int(env_number(env, "DB_MAX_OVERFLOW", 1, integer=True)),
            pool_timeout=env_number(env, "DB_POOL_TIMEOUT", 10.0, integer=False),
            pool_recycle=int(env_number(env, "DB_POOL_RECYCLE", 1800, minimum=-1, integer=True)),
            pool_pre_ping=env_flag(env, "DB_POOL_PRE_PING", False),
            statement_timeout_ms=int(
                env_number(env, "DB_STATEMENT_TIMEOUT_MS", 60_000, integer=True)
            ),
            idle_in_transaction_timeout_ms=int(
                env_number(env, "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 60_000, integer=True)
            ),
            lock_timeout_ms=int(env_number(env, "DB_LOCK_TIMEOUT_MS", 10_000, integer=True)),
            session_settings=mode,
            pgbouncer=pgbouncer,
        )
