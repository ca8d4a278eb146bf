"""`journey-worker serve`: the read-only HTTP API (api/) under uvicorn, a Procfile process.

Everything is checked before the port opens: API_* settings and API_KEYS (ConfigError, one line,
exit 2), PostgreSQL (the embedded SQLite default is refused with one line), and one round trip
to the database. SIGTERM or SIGINT stops it gracefully (uvicorn's own handling).
"""

from __future__ import annotations

import logging
import sys

import click
from sqlalchemy import text

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s] %(message)s"


def configure_logging(level: str) -> None:
    """Every line carries the request id ("-" outside a request); LOG_FORMAT=json as elsewhere."""
    from api.context import RequestContextFilter
    from worker.logging_config import JsonFormatter
    from worker.settings import current_settings

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(
        JsonFormatter()
        if current_settings().logging.log_format == "json"
        else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("journey_worker", "uvicorn.error"):
        logging.getLogger(name).setLevel(level)


@click.command()
@click.option("--host", default=None, help="Address to listen on [default: API_HOST, 127.0.0.1].")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="[default: API_PORT, 8080]"
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="INFO logs one line per request.",
)
def serve(host: str | None, port: int | None, log_level: str) -> None:
    """Serve the read-only HTTP API (docs/api.md): pages, exports and stats. PostgreSQL only."""
    import uvicorn

    from api.app import create_app
    from api.settings import ApiSettings

    settings = ApiSettings.from_env()
    app = create_app(settings)
    configure_logging(log_level.upper())
    engine = app.state.api.engine
    with engine.connect() as conn:  # OperationalError: one line naming DATABASE_URL, exit 2
        conn.execute(text("SELECT 1"))
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,  # ours, above
        access_log=False,  # api.context logs each request, with its id
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        # uvicorn logged why (typically the port is taken).
        sys.exit(2)
