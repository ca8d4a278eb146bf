"""Database settings: one field per environment variable, validated once, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, PlainValidator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from envconfig import ConfigError, Flag, Lowercase, Section

__all__ = [
    "EMBEDDED_DATABASE_URL",
    "EMBEDDED_DIR",
    "ConfigError",
    "DbSettings",
    "db_settings",
    "parse_database_url",
    "use_db_settings",
]

EMBEDDED_DIR = Path(".journey-worker")
EMBEDDED_DATABASE_URL = f"sqlite:///{EMBEDDED_DIR / 'journey.db'}"

# What hosting platforms hand out (postgres://, postgresql://) means PostgreSQL through
# psycopg 3; SQLAlchemy would pick psycopg2, which is not installed, or reject postgres://.
_POSTGRES_SCHEMES = ("postgres", "postgresql")
_OTHER_POSTGRES_DRIVERS = ("psycopg2", "psycopg2cffi", "asyncpg", "pg8000")


def parse_database_url(raw: str | URL) -> URL:
    """A SQLAlchemy URL for PostgreSQL (psycopg 3) or SQLite.

    The error never repeats the URL: it may hold a password.
    """
    try:
        url = raw if isinstance(raw, URL) else make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            "DATABASE_URL",
            "not a SQLAlchemy URL (expected e.g. postgresql://user@host/db or sqlite:///path)",
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend in _POSTGRES_SCHEMES:
        if driver in _OTHER_POSTGRES_DRIVERS:
            raise ConfigError("DATABASE_URL", "use the psycopg 3 driver: postgresql+psycopg://...")
        return url.set(drivername="postgresql+psycopg")
    if backend != "sqlite":
        raise ConfigError(
            "DATABASE_URL", f"unsupported database {backend!r} (postgresql or sqlite)"
        )
    return url


def _database_url(value: Any) -> URL:
    if not isinstance(value, str | URL):
        raise ValueError("expected a URL")
    return parse_database_url(value)


def _without_password(url: URL) -> str:
    return url.render_as_string(hide_password=True)


# Validated by parse_database_url alone; shown (repr, str, model_dump) without its password.
DatabaseUrl = Annotated[URL, PlainValidator(_database_url), PlainSerializer(_without_password)]


class DbSettings(Section):
    """How the worker connects. Defaults suit one prefork child running one task at a time."""

    url: DatabaseUrl = Field(EMBEDDED_DATABASE_URL, validation_alias="DATABASE_URL")
    """SQLAlchemy URL; the embedded SQLite file by default."""

    # The pool: each prefork child has its own.
    pool_size: int = Field(1, ge=1, validation_alias="DB_POOL_SIZE")
    """Connections kept open per process."""
    max_overflow: int = Field(1, ge=0, validation_alias="DB_MAX_OVERFLOW")
    """Connections opened beyond pool_size when all are busy."""
    pool_timeout: float = Field(10.0, ge=0, validation_alias="DB_POOL_TIMEOUT")
    """Seconds to wait for a pooled connection."""
    pool_recycle: int = Field(1800, ge=-1, validation_alias="DB_POOL_RECYCLE")
    """Seconds after which a connection is replaced; -1 never."""
    pool_pre_ping: Flag = Field(False, validation_alias="DB_POOL_PRE_PING")
    """Test each connection on checkout (a round trip per task; disconnects are retried)."""

    # Per connection.
    statement_timeout_ms: int = Field(60_000, ge=0, validation_alias="DB_STATEMENT_TIMEOUT_MS")
    """statement_timeout, in milliseconds."""
    idle_in_transaction_timeout_ms: int = Field(
        60_000, ge=0, validation_alias="DB_IDLE_IN_TRANSACTION_TIMEOUT_MS"
    )
    """idle_in_transaction_session_timeout, in milliseconds."""
    lock_timeout_ms: int = Field(10_000, ge=0, validation_alias="DB_LOCK_TIMEOUT_MS")
    """lock_timeout, in milliseconds."""

    # PgBouncer. pgbouncer comes first: session_settings' default depends on it.
    pgbouncer: Flag = Field(False, validation_alias="DB_PGBOUNCER")
    """Behind PgBouncer in transaction mode: no prepared statements, session settings 'none'."""
    session_settings: Annotated[Literal["startup", "checkout", "none"], Lowercase] = Field(
        default_factory=lambda data: "none" if data.get("pgbouncer") else "startup",
        validation_alias="DB_SESSION_SETTINGS",
    )
    """How the timeouts reach the server. startup: -c options in the connection packet (plain
    PostgreSQL); checkout: SET on each new connection (PgBouncer session pooling); none: the
    role or PgBouncer sets them (transaction pooling; the default with DB_PGBOUNCER=true)."""

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def connections_per_process(self) -> int:
        return self.pool_size + self.max_overflow


_settings: DbSettings | None = None


def db_settings() -> DbSettings:
    """The process's database settings: the installed ones, else read from the environment once."""
    global _settings
    if _settings is None:
        _settings = DbSettings.from_env()
    return _settings


def use_db_settings(settings: DbSettings | None) -> None:
    """Install `settings` for this process (the worker at start, tests, the demo); None forgets
    them, so the next db_settings() reads the environment again."""
    global _settings
    _settings = settings
