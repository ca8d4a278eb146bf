"""`journey-worker listen`: the invalidation listener as a long-running process (a Procfile entry).

SIGTERM or SIGINT stops it cleanly (exit 0) within about a second.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

import click

from worker.listen import REPORT_SECONDS, Listener, conninfo_from_url
from worker.settings import current_settings

log = logging.getLogger("worker.listen")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _configure_logging(level: str) -> None:
    from worker.logging_config import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    # LOG_FORMAT=json gives the same one-object-per-line records as the worker's.
    formatter = (
        JsonFormatter()
        if current_settings().logging.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # Our own lines at the asked level; libraries (psycopg, redis) stay at WARNING.
    for name in ("worker", "cache"):
        logging.getLogger(name).setLevel(level)


def _stop_on_signals(stop: threading.Event) -> None:
    def _handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


@click.command()
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="DEBUG logs every invalidation.",
)
@click.option(
    "--report-interval",
    type=click.FloatRange(min=1),
    default=REPORT_SECONDS,
    show_default=True,
    help="Seconds between INFO lines counting the invalidations.",
)
def listen(log_level: str, report_interval: float) -> None:
    """Drop cached journeys and tenants the moment a change to them commits.

    LISTENs on the channel of migration 0003's triggers (DATABASE_URL, PostgreSQL) and
    invalidates the shared cache (REDIS_URL). Run one or two per deployment; reconnects by itself.
    """
    _configure_logging(log_level.upper())
    settings = current_settings()
    db_settings, cache_settings = settings.db, settings.cache
    stop = threading.Event()
    _stop_on_signals(stop)

    if db_settings.is_sqlite or cache_settings.embedded:
        # Nothing to do, but stay up: a Procfile runner (honcho) stops every process when one
        # exits, and the embedded default is meant to run the same Procfile.
        why = "SQLite has no LISTEN" if db_settings.is_sqlite else "REDIS_URL is not set"
        log.warning(
            "invalidation listener idle: %s, so each process's in-process cache is bounded by "
            "its TTL only; set DATABASE_URL (PostgreSQL) and REDIS_URL to use it",
            why,
        )
        while not stop.wait(1.0):
            pass
        return

    listener = Listener(conninfo_from_url(db_settings.url), report_seconds=report_interval)
    listener.run(stop)
