"""Starting contacts on a journey: one INSERT ... SELECT for up to a thousand contacts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, literal, select, text
from sqlalchemy.orm import Session

from db.clock import seconds_from_now
from db.dialects import dialect_insert
from db.models import Contact, Journey, JourneyContact, gen_random_uuid
from db.statuses import OPEN_CONTACT_STATUSES, ContactStatus

JC = JourneyContact


def journey_entry(session: Session, tenant_id: uuid.UUID, journey_id: uuid.UUID) -> Row[Any] | None:
    stmt = select(Journey.status, Journey.entry_node_id).where(
        Journey.id == journey_id, Journey.tenant_id == tenant_id
    )
    return session.execute(stmt).one_or_none()


def enroll_contacts(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    journey_id: uuid.UUID,
    entry_node_id: uuid.UUID,
    contact_ids: Sequence[uuid.UUID],
    grace_seconds: float,
) -> list[uuid.UUID]:
    """Insert journey contacts for the tenant's contacts not already open on this journey.

    One INSERT ... SELECT ... ON CONFLICT DO NOTHING: unknown and foreign contact ids simply
    select nothing, and a contact already ACTIVE, WAITING or PAUSED here is left alone.
    Returns the new journey contact ids.
    """
    open_statuses = ", ".join(f"'{s.value}'" for s in OPEN_CONTACT_STATUSES)
    rows = select(
        # Explicit: a Python-side uuid4 default would be one value for every selected row.
        gen_random_uuid(),
        Contact.tenant_id,
        literal(journey_id, JC.journey_id.type),
        Contact.id,
        literal(ContactStatus.ACTIVE.value),
        literal(entry_node_id, JC.current_node_id.type),
        literal(0),
        seconds_from_now(grace_seconds),
    ).where(Contact.id.in_(list(contact_ids)), Contact.tenant_id == tenant_id)
    stmt = (
        dialect_insert(session)(JC)
        .from_select(
            [
                "id",
                "tenant_id",
                "journey_id",
                "contact_id",
                "status",
                "current_node_id",
                "step_seq",
                "due_at",
            ],
            rows,
        )
        .on_conflict_do_nothing(
            index_elements=["journey_id", "contact_id"],
            index_where=text(f"status IN ({open_statuses})"),
        )
        .returning(JC.id)
    )
    return list(session.execute(stmt).scalars())
