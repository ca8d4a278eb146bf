"""The due-step dispatcher's statements: waits whose time has come, steps whose message was
lost, and the contacts whose step will never run."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from db.clock import db_now, seconds_from_now
from db.models import JourneyContact
from db.statuses import ContactStatus

JC = JourneyContact


@dataclass(frozen=True)
class DueStep:
    journey_contact_id: uuid.UUID
    tenant_id: uuid.UUID
    node_id: uuid.UUID | None
    step_seq: int
    redispatch_count: int


def claim_due_steps(session: Session, *, batch_size: int, grace_seconds: float) -> list[DueStep]:
    """Claim a batch of due steps: waits whose time has come and steps whose enqueue was lost.

    FOR UPDATE SKIP LOCKED lets several dispatchers run at once without taking the same row;
    the claim pushes due_at one grace period ahead, so a dispatcher that dies after commit
    leaves rows that are simply claimed again later.
    """
    due = or_(
        JC.due_at <= db_now(),
        # Upstream-created rows carry no due_at; sweep them once they are old enough.
        (JC.due_at.is_(None)) & (JC.created_at <= seconds_from_now(-grace_seconds)),
    )
    claim = (
        select(JC.id)
        .where(JC.status.in_([ContactStatus.ACTIVE.value, ContactStatus.WAITING.value]), due)
        .order_by(JC.due_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    was_active = case((JC.status == ContactStatus.ACTIVE.value, 1), else_=0)
    stmt = (
        update(JC)
        .where(JC.id.in_(claim.scalar_subquery()))
        .values(
            status=ContactStatus.ACTIVE.value,
            due_at=seconds_from_now(grace_seconds),
            redispatch_count=JC.redispatch_count + was_active,
            updated_at=db_now(),
        )
        .returning(JC.id, JC.tenant_id, JC.current_node_id, JC.step_seq, JC.redispatch_count)
    )
    return [DueStep(*row) for row in session.execute(stmt)]


def finish_journey_contacts(
    session: Session, ids: Sequence[uuid.UUID], *, status: str, reason: str
) -> None:
    if not ids:
        return
    session.execute(
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
