"""Contacts held PAUSED while their tenant is suspended or their journey is not active, and
what releases them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.clock import db_now
from db.models import Journey, JourneyContact, Tenant
from db.statuses import ContactStatus

JC = JourneyContact


def resume_held_contacts(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    reasons: Sequence[str],
    journey_id: uuid.UUID | None = None,
) -> int:
    """Release contacts held PAUSED for one of `reasons`: their step is in no queue, so the
    dispatcher publishes it at its next run, whatever the backlog."""
    stmt = update(JC).where(
        JC.tenant_id == tenant_id,
        JC.status == ContactStatus.PAUSED.value,
        JC.status_reason.in_(list(reasons)),
    )
    if journey_id is not None:
        stmt = stmt.where(JC.journey_id == journey_id)
    result = session.execute(
        stmt.values(
            status=ContactStatus.ACTIVE.value,
            status_reason=None,
            due_at=db_now(),
            redispatch_count=0,
            unpublished=True,
            updated_at=db_now(),
        )
    )
    return result.rowcount or 0


def exit_held_contacts(
    session: Session, tenant_id: uuid.UUID, journey_id: uuid.UUID, reason: str
) -> int:
    result = session.execute(
        update(JC)
        .where(
            JC.tenant_id == tenant_id,
            JC.journey_id == journey_id,
            JC.status == ContactStatus.PAUSED.value,
        )
        .values(
            status=ContactStatus.EXITED.value,
            status_reason=reason,
            due_at=None,
            completed_at=db_now(),
            updated_at=db_now(),
        )
    )
    return result.rowcount or 0


def tenant_status(session: Session, tenant_id: uuid.UUID) -> str | None:
    return session.execute(select(Tenant.status).where(Tenant.id == tenant_id)).scalar()


def journey_status(session: Session, tenant_id: uuid.UUID, journey_id: uuid.UUID) -> str | None:
    return session.execute(
        select(Journey.status).where(Journey.id == journey_id, Journey.tenant_id == tenant_id)
    ).scalar()
