"""journeys.purge_executions: retention of the execution log, in small batches."""

from __future__ import annotations

import logging

from celery import shared_task

from db import retention
from db.engine import transaction
from tasks import names
from tasks.base import JourneyTask
from tasks.settings import engine_settings

log = logging.getLogger("journey_worker.tasks")


@shared_task(
    bind=True,
    base=JourneyTask,
    name=names.PURGE_EXECUTIONS,
    # Many short transactions, far longer in all than a node: its own limits.
    soft_time_limit=600,
    time_limit=660,
)
def purge_executions(self: JourneyTask, max_batches: int = 100) -> dict[str, int]:
    """Retention: the execution log grows by millions of rows a day; old rows go in batches."""
    settings = engine_settings()
    if settings.purge_after_days <= 0:
        return {"deleted": 0}
    with transaction() as session:
        cutoff = retention.purge_cutoff(session, older_than_days=settings.purge_after_days)
    deleted, below = 0, None
    for _ in range(max_batches):
        with transaction() as session:
            batch = retention.purge_executions_batch(
                session, cutoff=cutoff, batch_size=settings.purge_batch_size, below=below
            )
        deleted += batch.deleted
        # Each batch continues where the last stopped (db/retention.py says why).
        below = batch.oldest
        if batch.deleted < settings.purge_batch_size:
            break
    log.info("purged %d executions older than %d days", deleted, settings.purge_after_days)
    return {"deleted": deleted}
