"""The due-step dispatcher's statements.

Two kinds of step are published by the dispatcher, and they are told apart on purpose:

- Scheduled steps are known not to be in any queue: waits whose time has come, and steps
  marked `unpublished` (their publish failed, or a held contact was released). They are
  published at every run, whatever the backlog, each tenant's oldest first (fairness: one
  tenant's million due waits do not stand in front of another tenant's one).
- Late steps were published and have not run within their grace period. A step still waiting
  in a queue behind a backlog is not lost, so these are claimed only while the step queues are
  quiet (db rows of `dispatch_lanes`, tasks/dispatch.py); each re-publication doubles the grace
  and counts towards the `stalled` verdict.

FOR UPDATE SKIP LOCKED lets several dispatchers run at once without taking the same row.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, literal_column, or_, select, text, update
from sqlalchemy.orm import Session

from db.clock import db_now, seconds_from_now
from db.dialects import dialect_insert, is_postgresql
from db.models import DispatchLane, JourneyContact
from db.statuses import ContactStatus

JC = JourneyContact
Bind = Session | Connection
# A re-published step's grace doubles up to 2**10 times, then stays there.
MAX_GRACE_DOUBLINGS = 10


@dataclass(frozen=True)
class DueStep:
    journey_contact_id: uuid.UUID
    tenant_id: uuid.UUID
    node_id: uuid.UUID | None
    step_seq: int
    redispatch_count: int
    # How late the step was when claimed: now minus its due time (a wait's dispatch lag).
    late_seconds: float = 0.0


SCHEDULED_PG = text(f"""
WITH picked AS (
    SELECT due.id, due.due_at
    FROM (SELECT id FROM tenants ORDER BY random()) t
    CROSS JOIN LATERAL (
        SELECT jc.id, jc.due_at FROM journey_contacts jc
        WHERE jc.tenant_id = t.id
          AND (jc.status = 'WAITING' OR (jc.status = 'ACTIVE' AND jc.unpublished))
          AND jc.due_at <= now()
        ORDER BY jc.due_at
        LIMIT :per_tenant
        FOR UPDATE OF jc SKIP LOCKED
    ) due
    LIMIT :limit
)
UPDATE journey_contacts jc SET
    status = '{ContactStatus.ACTIVE.value}',
    due_at = clock_timestamp() + make_interval(secs => :grace_seconds),
    unpublished = false,
    updated_at = now()
FROM picked
WHERE jc.id = picked.id
RETURNING jc.id, jc.tenant_id, jc.current_node_id, jc.step_seq, jc.redispatch_count,
    extract(epoch FROM now() - picked.due_at)
""")


def claim_scheduled_steps(
    bind: Bind, *, per_tenant: int, limit: int, grace_seconds: float
) -> list[DueStep]:
    """Claim due waits and unpublished steps, up to `per_tenant` of each tenant's oldest and
    `limit` in all, and re-arm them one grace period ahead (a dispatcher that dies after its
    commit leaves rows that are simply late, claimed again when the queues are quiet)."""
    if is_postgresql(bind):
        rows = bind.execute(
            SCHEDULED_PG,
            {"per_tenant": per_tenant, "limit": limit, "grace_seconds": grace_seconds},
        )
        return [DueStep(*row[:5], late_seconds=float(row[5] or 0)) for row in rows]
    # SQLite (the embedded default, one writer): due order only.
    scheduled = or_(
        JC.status == ContactStatus.WAITING.value,
        (JC.status == ContactStatus.ACTIVE.value) & JC.unpublished,
    )
    due = (
        select(JC.id, JC.due_at)
        .where(scheduled, JC.due_at <= db_now())
        .order_by(JC.due_at)
        .limit(limit)
    ).subquery()
    rows = bind.execute(select(due.c.id, func.julianday("now") - func.julianday(due.c.due_at)))
    lateness = {row[0]: float(row[1] or 0) * 86400 for row in rows}
    if not lateness:
        return []
    claimed = bind.execute(
        update(JC)
        .where(JC.id.in_(list(lateness)))
        .values(
            status=ContactStatus.ACTIVE.value,
            due_at=seconds_from_now(grace_seconds),
            unpublished=False,
            updated_at=db_now(),
        )
        .returning(JC.id, JC.tenant_id, JC.current_node_id, JC.step_seq, JC.redispatch_count)
    )
    return [DueStep(*row, late_seconds=lateness[row[0]]) for row in claimed]


def claim_late_steps(bind: Bind, *, limit: int, grace_seconds: float) -> list[DueStep]:
    """Claim published steps that did not run within their grace period (call only while the
    queues are quiet: then the message was lost, not queued). Each is re-armed with a grace
    twice as long as the last, and counted: MAX_REDISPATCHES re-publications make it stalled.
    Upstream-created rows carry no due_at and count from their creation."""
    late = (JC.status == ContactStatus.ACTIVE.value) & ~JC.unpublished
    overdue = or_(
        JC.due_at <= db_now(),
        (JC.due_at.is_(None)) & (JC.created_at <= seconds_from_now(-grace_seconds)),
    )
    claim = (
        select(JC.id)
        .where(late, overdue)
        .order_by(JC.due_at.nulls_first())
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    grace = bindparam("grace", grace_seconds)
    if is_postgresql(bind):
        doubling = literal_column(f"power(2, least(redispatch_count + 1, {MAX_GRACE_DOUBLINGS}))")
        due_at = func.clock_timestamp() + literal_column("interval '1 second'") * (grace * doubling)
    else:
        doubling = literal_column(f"(1 << min(redispatch_count + 1, {MAX_GRACE_DOUBLINGS}))")
        due_at = func.strftime(
            "%Y-%m-%d %H:%M:%f", "now", func.printf("%+.6f seconds", grace * doubling)
        )
    stmt = (
        update(JC)
        .where(JC.id.in_(claim.scalar_subquery()))
        .values(due_at=due_at, redispatch_count=JC.redispatch_count + 1, updated_at=db_now())
        .returning(JC.id, JC.tenant_id, JC.current_node_id, JC.step_seq, JC.redispatch_count)
    )
    return [DueStep(*row) for row in bind.execute(stmt)]


def mark_unpublished(
    bind: Bind, tenant_id: uuid.UUID, steps: Sequence[tuple[uuid.UUID, int]]
) -> int:
    """The messages for these steps could not be published: due at once for the dispatcher,
    whatever the backlog (only if each is still ACTIVE at that step)."""
    if not steps:
        return 0
    at_step = [(JC.id == jc) & (JC.step_seq == step) for jc, step in steps]
    result = bind.execute(
        update(JC)
        .where(or_(*at_step), JC.tenant_id == tenant_id, JC.status == ContactStatus.ACTIVE.value)
        .values(unpublished=True, due_at=db_now(), updated_at=db_now())
    )
    return result.rowcount or 0


def finish_journey_contacts(
    bind: Bind, ids: Sequence[uuid.UUID], *, status: str, reason: str
) -> None:
    if not ids:
        return
    bind.execute(
        update(JC)
        .where(JC.id.in_(list(ids)))
        .values(
            status=status,
            status_reason=reason,
            due_at=None,
            completed_at=db_now(),
            updated_at=db_now(),
        )
    )


def observe_lanes(bind: Bind, depths: Mapping[str, int | None]) -> float:
    """Record what the dispatcher saw of each step queue (None: could not tell) and return how
    many seconds they have all been seen empty (0 if one is not empty now). A lane seen for the
    first time counts as busy now: nobody knows what it held before."""
    insert = dialect_insert(bind)(DispatchLane)
    for lane, depth in depths.items():
        busy = depth is None or depth > 0
        stmt = insert.values(lane=lane, depth=depth, observed_at=db_now(), busy_at=db_now())
        bind.execute(
            stmt.on_conflict_do_update(
                index_elements=["lane"],
                set_={
                    "depth": stmt.excluded.depth,
                    "observed_at": stmt.excluded.observed_at,
                    "busy_at": stmt.excluded.busy_at if busy else DispatchLane.busy_at,
                },
            )
        )
    busy_at = func.max(DispatchLane.busy_at)
    if is_postgresql(bind):
        quiet = select(func.extract("epoch", func.now() - busy_at))
    else:
        quiet = select((func.julianday("now") - func.julianday(busy_at)) * 86400)
    seconds = bind.execute(quiet.where(DispatchLane.lane.in_(list(depths)))).scalar()
    return max(float(seconds or 0.0), 0.0)
