"""The API's settings: flat environment variables (README, Configuration), read once at start.

A bad value is a ConfigError naming the variable (one line, exit code 2 from the CLI). Secrets
(API_KEYS, API_CURSOR_SECRET) are never echoed in an error.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.settings import ConfigError

SECRET_FIELDS = frozenset({"keys", "cursor_secret"})


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="API_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # Comma-separated TENANT_ID:KEY pairs; KEY is the key itself or sha256:<hex digest>.
    keys: SecretStr = SecretStr("")
    # Signs pagination cursors; unset, a secret derived from API_KEYS (api/cursor.py).
    cursor_secret: SecretStr | None = None
    # The API's own pool: a request holds a connection for one statement or two, an export for
    # its whole length (docs/operations.md, the connection budget).
    db_pool_size: int = Field(4, ge=1)
    db_max_overflow: int = Field(4, ge=0)
    # Exports running at once per process; one more answers 503.
    max_exports: int = Field(2, ge=1)
    # An export is one COPY statement: it gets its own timeout (0: none) instead of the
    # per-connection DB_STATEMENT_TIMEOUT_MS, which would cut a large one short.
    export_statement_timeout_ms: int = Field(3_600_000, ge=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        try:
            if environ is None:
                return cls()
            values = {}
            for name in cls.model_fields:
                raw = environ.get(f"API_{name.upper()}", "").strip()
                if raw:
                    values[name] = raw
            # model_validate reads only `values`, never the process environment.
            return cls.model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = str(error["loc"][0]) if error["loc"] else ""
            problem = error["msg"]
            if name not in SECRET_FIELDS and "input" in error:
                problem = f"{problem}, got {error['input']!r}"
            raise ConfigError(f"API_{name.upper()}", problem) from None
