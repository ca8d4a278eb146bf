"""Retention: the execution log grows by millions of rows a day; old rows go in small batches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.clock import seconds_from_now
from db.models import JourneyNodeExecution

JNE = JourneyNodeExecution


@dataclass(frozen=True)
class PurgeBatch:
    deleted: int
    # The oldest executed_at this batch deleted: the next batch continues at or below it.
    oldest: datetime | None


def purge_executions_batch(
    session: Session,
    *,
    older_than_days: int,
    batch_size: int,
    below: datetime | None = None,
) -> PurgeBatch:
    """Delete one batch of executions older than the cutoff, newest of them first.

    Small batches in their own transactions, rows taken with SKIP LOCKED through the
    executed_at index: the hot path never waits on the purge, and the purge never scans.
    `below` (the previous batch's `oldest`) starts the index range where that batch stopped:
    from the cutoff each batch would first step over every index entry the batches before it
    deleted, dead until vacuum removes them, and slow down as the purge goes on.
    """
    conditions = [
        JNE.executed_at.is_not(None),
        JNE.executed_at < seconds_from_now(-older_than_days * 86400),
    ]
    if below is not None:
        # At or below: rows sharing the boundary's timestamp may remain.
        conditions.append(JNE.executed_at <= below)
    victims = (
        select(JNE.id)
        .where(*conditions)
        .order_by(JNE.executed_at.desc())
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    stmt = delete(JNE).where(JNE.id.in_(victims.scalar_subquery())).returning(JNE.executed_at)
    # A batch's timestamps (5,000 by default) are small; SQLite has no DELETE in a CTE.
    times = session.execute(stmt).scalars().all()
    return PurgeBatch(deleted=len(times), oldest=min(times) if times else None)
