"""The API's settings: flat environment variables (README, Configuration), read once at start.

A bad value is a ConfigError naming the variable (one line, exit code 2 from the CLI). Secrets
(API_KEYS, API_CURSOR_SECRET) are never echoed in an error.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from envconfig import Section


class ApiSettings(Section):
    """`journey-worker serve`: where it listens, who may read, and its own database pool."""

    host: str = Field("127.0.0.1", validation_alias="API_HOST")
    """The address the API listens on."""
    port: int = Field(8080, ge=1, le=65535, validation_alias="API_PORT")
    """The port the API listens on."""
    keys: SecretStr = Field(SecretStr(""), validation_alias="API_KEYS")
    """Comma-separated TENANT_ID:KEY pairs; KEY is the key itself or sha256:<hex digest>."""
    cursor_secret: SecretStr | None = Field(None, validation_alias="API_CURSOR_SECRET")
    """Signs pagination cursors; unset, a secret derived from API_KEYS (api/cursor.py)."""
    db_pool_size: int = Field(4, ge=1, validation_alias="API_DB_POOL_SIZE")
    """The API's own pool: a request holds a connection for one statement or two, an export
    for its whole length (docs/operations.md, the connection budget)."""
    db_max_overflow: int = Field(4, ge=0, validation_alias="API_DB_MAX_OVERFLOW")
    """Connections beyond the pool, while requests pile up."""
    max_exports: int = Field(2, ge=1, validation_alias="API_MAX_EXPORTS")
    """Exports running at once per process; one more answers 503."""
    export_statement_timeout_ms: int = Field(
        3_600_000, ge=0, validation_alias="API_EXPORT_STATEMENT_TIMEOUT_MS"
    )
    """An export is one COPY statement: it gets its own timeout (0: none) instead of the
    per-connection DB_STATEMENT_TIMEOUT_MS, which would cut a large one short."""
