"""Retention: the execution log grows by millions of rows a day; old rows go in small batches."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.clock import seconds_from_now
from db.models import JourneyNodeExecution

JNE = JourneyNodeExecution


def purge_executions_batch(session: Session, *, older_than_days: int, batch_size: int) -> int:
    """Delete one batch of executions older than the cutoff, oldest first.

    Small batches in their own transactions, rows taken with SKIP LOCKED through the
    executed_at index: the hot path never waits on the purge, and the purge never scans.
    """
    victims = (
        select(JNE.id)
        .where(
            JNE.executed_at.is_not(None),
            JNE.executed_at < seconds_from_now(-older_than_days * 86400),
        )
        .order_by(JNE.executed_at.desc())
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    result = session.execute(delete(JNE).where(JNE.id.in_(victims.scalar_subquery())))
    return result.rowcount or 0
