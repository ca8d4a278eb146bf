"""journeys.refresh_stats: beat refreshes the funnel view (db/stats.py) every
STATS_REFRESH_INTERVAL_SECONDS. Never retried: the next tick is the retry, and a refresh that
timed out is recorded in task_failures, where an operator sees it."""

from __future__ import annotations

import logging

from celery import shared_task

from db import stats
from db.engine import get_engine
from tasks import names
from tasks.base import JourneyTask
from tasks.settings import engine_settings

log = logging.getLogger("journey_worker.stats")

_settings = engine_settings()
# Longer than the statement may run, so the database's timeout, not Celery's, ends a slow one.
_SOFT_LIMIT = _settings.stats_refresh_statement_timeout_ms / 1000 + 30


@shared_task(
    bind=True,
    base=JourneyTask,
    name=names.REFRESH_STATS,
    max_retries=0,
    soft_time_limit=_SOFT_LIMIT,
    time_limit=_SOFT_LIMIT + 30,
)
def refresh_stats(self: JourneyTask) -> dict[str, object]:
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        return {"refreshed": False, "reason": "the funnel view needs PostgreSQL"}
    settings = engine_settings()
    result = stats.refresh(
        engine,
        statement_timeout_ms=settings.stats_refresh_statement_timeout_ms,
        lock_timeout_ms=settings.stats_refresh_lock_timeout_ms,
    )
    if result.refreshed:
        log.info(
            "refreshed %s%s in %d ms",
            stats.VIEW,
            " concurrently" if result.concurrently else " (first population)",
            result.duration_ms,
        )
    else:
        log.info("skipped refreshing %s: another refresh holds its lock", stats.VIEW)
    return {
        "refreshed": result.refreshed,
        "concurrently": result.concurrently,
        "duration_ms": result.duration_ms,
    }
