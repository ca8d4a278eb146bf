"""The FastAPI application: settings, keys, the database, routes, problem details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from api import exports, pages, problems, stats
from api.auth import KeyRing, parse_api_keys
from api.context import RequestContextMiddleware
from api.cursor import CursorCodec, derived_secret
from api.dependencies import ApiState, ExportSlots
from api.settings import ApiSettings
from db.engine import build_engine
from db.settings import ConfigError, DbSettings

DESCRIPTION = """Read-only access to a tenant's journeys, journey contacts, executions, messages
and funnel statistics. Authenticate with `Authorization: Bearer KEY` (a key of API_KEYS); a key
sees its own tenant's rows only. Lists are keyset-paginated (`limit`, `cursor`, `next_cursor`),
errors are RFC 9457 problem details. See docs/api.md."""


def api_engine(settings: ApiSettings, db_settings: DbSettings | None = None) -> Engine:
    """The API's own engine: its pool sizes, and READ ONLY transactions."""
    db_settings = db_settings or DbSettings.from_env()
    if db_settings.is_sqlite:
        raise ConfigError(
            "DATABASE_URL",
            "the HTTP API needs PostgreSQL (postgresql+psycopg://...): its exports use COPY "
            "and its statistics a materialized view, which the embedded SQLite default lacks",
        )
    db_settings = db_settings.model_copy(
        update={"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow}
    )
    # BEGIN READ ONLY on every transaction: the API reads; only the worker writes.
    return build_engine(db_settings).execution_options(postgresql_readonly=True)


def create_app(settings: ApiSettings | None = None, engine: Engine | None = None) -> FastAPI:
    """Everything is checked here, before a port is opened: ConfigError names the variable."""
    settings = settings or ApiSettings.from_env()
    keys = KeyRing(parse_api_keys(settings.keys.get_secret_value()))
    if not len(keys):
        raise ConfigError("API_KEYS", "no keys: set comma-separated TENANT_ID:KEY pairs")
    own_engine = engine is None
    if engine is None:
        engine = api_engine(settings)
    elif engine.dialect.name != "postgresql":
        raise ConfigError("DATABASE_URL", "the HTTP API needs PostgreSQL")
    secret = (
        settings.cursor_secret.get_secret_value().encode()
        if settings.cursor_secret is not None
        else derived_secret(keys.digests)
    )
    state = ApiState(
        settings=settings,
        engine=engine,
        keys=keys,
        cursors=CursorCodec(secret),
        exports=ExportSlots(settings.max_exports),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if own_engine:
            state.engine.dispose()

    app = FastAPI(
        title="journey-worker read API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        # The interactive docs pages load their scripts from a CDN: off. /openapi.json is
        # the document; any OpenAPI tool renders it.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.api = state
    problems.install(app)
    app.include_router(pages.router)
    app.include_router(exports.router)
    app.include_router(stats.router)
    # Added last is outermost: the request context wraps the 500 handler, which wraps the app.
    app.add_middleware(problems.InternalErrorMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app
