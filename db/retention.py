"""Retention: the execution log grows by millions of rows a day; old rows go in small batches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Delete, delete, select
from sqlalchemy.orm import Session

from db.clock import seconds_from_now
from db.models import JourneyNodeExecution

JNE = JourneyNodeExecution


@dataclass(frozen=True)
class PurgeBatch:
    deleted: int
    # The oldest executed_at this batch deleted: the next batch continues at or below it.
    oldest: datetime | None


def purge_cutoff(session: Session, *, older_than: timedelta) -> datetime:
    """The database clock minus the retention, read once per purge run.

    Bound into each batch as a value: compared with clock_timestamp() itself (volatile), the
    condition cannot bound the executed_at index scan, and each batch would walk every newer
    row's index entry before reaching the old ones (over a minute at 10,000,000 rows)."""
    return session.execute(select(seconds_from_now(-older_than.total_seconds()))).scalar_one()


def purge_executions_batch(
    session: Session,
    *,
    cutoff: datetime,
    batch_size: int,
    below: datetime | None = None,
) -> PurgeBatch:
    """Delete one batch of executions older than `cutoff`, the newest of them first.

    Small batches in their own transactions, rows taken with SKIP LOCKED through a range of the
    executed_at index: the hot path never waits on the purge, and the purge never scans.
    `below` (the previous batch's `oldest`) starts the range where that batch stopped: from the
    cutoff each batch would first step over every index entry the batches before it deleted,
    dead until vacuum removes them, and slow down as the purge goes on.
    """
    stmt = purge_statement(cutoff=cutoff, batch_size=batch_size, below=below)
    # A batch's timestamps (5,000 by default) are small; SQLite has no DELETE in a CTE.
    times = session.execute(stmt).scalars().all()
    return PurgeBatch(deleted=len(times), oldest=min(times) if times else None)


def purge_statement(*, cutoff: datetime, batch_size: int, below: datetime | None) -> Delete:
    bound = JNE.executed_at < cutoff if below is None else JNE.executed_at <= below
    victims = (
        select(JNE.id)
        .where(JNE.executed_at.is_not(None), bound)
        .order_by(JNE.executed_at.desc())
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    return delete(JNE).where(JNE.id.in_(victims.scalar_subquery())).returning(JNE.executed_at)
