"""Contact events in SQL: recording one once per event_id, and finding the journey contacts
that wait for events (wait_for_event nodes) in one indexed lookup."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, literal_column, select, text
from sqlalchemy.orm import Session, aliased

from db.clock import as_utc, db_now
from db.dialects import dialect_insert
from db.models import ContactEvent, JourneyContact, JourneyNode, JourneyNodeExecution
from db.statuses import ContactStatus

Bind = Session | Connection

WAIT_FOR_EVENT = "wait_for_event"


@dataclass(frozen=True)
class StoredEvent:
    id: uuid.UUID
    contact_id: uuid.UUID
    name: str
    properties: dict[str, Any]
    occurred_at: datetime
    event_id: str | None
    created: bool  # False: this event_id was recorded before


@dataclass(frozen=True)
class WaitingStep:
    """A journey contact waiting at a wait_for_event node, and since when."""

    journey_contact_id: uuid.UUID
    contact_id: uuid.UUID
    step_seq: int
    node_id: uuid.UUID
    config: Any
    entered_at: datetime
    # The timeout: an event that happened at or after it is too late, even if the timeout's
    # own step has not run yet.
    due_at: datetime | None


def record_event(
    bind: Bind,
    *,
    tenant_id: uuid.UUID,
    contact_id: uuid.UUID,
    name: str,
    properties: dict[str, Any],
    occurred_at: datetime | None,
    event_id: str | None,
) -> StoredEvent:
    """Insert the event; with an event_id already recorded, return that one instead."""
    row_id = uuid.uuid4()
    inserted = bind.execute(
        dialect_insert(bind)(ContactEvent)
        .values(
            id=row_id,
            tenant_id=tenant_id,
            contact_id=contact_id,
            name=name,
            properties=properties,
            occurred_at=occurred_at if occurred_at is not None else db_now(),
            event_id=event_id,
        )
        .on_conflict_do_nothing(
            index_elements=["tenant_id", "event_id"], index_where=text("event_id IS NOT NULL")
        )
        .returning(ContactEvent.id, ContactEvent.occurred_at)
    ).first()
    if inserted is not None:
        # Written just now: everything but the database's default time is already known.
        occurred = as_utc(inserted.occurred_at)
        assert occurred is not None
        return StoredEvent(
            inserted.id, contact_id, name, dict(properties), occurred, event_id, created=True
        )
    row = bind.execute(
        select(
            ContactEvent.id,
            ContactEvent.contact_id,
            ContactEvent.name,
            ContactEvent.properties,
            ContactEvent.occurred_at,
            ContactEvent.event_id,
        ).where(ContactEvent.tenant_id == tenant_id, ContactEvent.event_id == event_id)
    ).one()
    occurred = as_utc(row.occurred_at)
    assert occurred is not None
    return StoredEvent(
        row.id,
        row.contact_id,
        row.name,
        dict(row.properties or {}),
        occurred,
        row.event_id,
        False,
    )


def waiting_steps_query(
    tenant_id: uuid.UUID,
    contact_id: uuid.UUID | None = None,
    journey_contact_ids: Sequence[uuid.UUID] = (),
) -> Any:
    """The contact's journey contacts WAITING at a wait_for_event node, with the time each
    entered the wait: the entry's execution (the step before), else the row's last change.
    One range of ix_journey_contacts_waiting_contact (contact_id WHERE status = 'WAITING')."""
    jc, node, entry = JourneyContact, JourneyNode, aliased(JourneyNodeExecution)
    return (
        select(
            jc.id,
            jc.contact_id,
            jc.step_seq,
            jc.current_node_id,
            node.config,
            func.coalesce(entry.executed_at, jc.updated_at).label("entered_at"),
            jc.due_at,
        )
        .select_from(jc)
        .join(
            node,
            and_(
                node.id == jc.current_node_id,
                node.journey_id == jc.journey_id,
                node.type == literal_column(f"'{WAIT_FOR_EVENT}'"),
            ),
        )
        .outerjoin(
            entry,
            and_(
                entry.journey_contact_id == jc.id,
                entry.step_seq == jc.step_seq - 1,
                entry.node_id == jc.current_node_id,
            ),
        )
        .where(
            jc.contact_id == contact_id
            if contact_id is not None
            else jc.id.in_(list(journey_contact_ids)),
            jc.tenant_id == tenant_id,
            # A literal, not a parameter: a prepared statement's generic plan can then still
            # prove the partial index's predicate (status = 'WAITING').
            jc.status == literal_column(f"'{ContactStatus.WAITING.value}'"),
        )
        .order_by(jc.id)
    )


def waiting_steps(bind: Bind, tenant_id: uuid.UUID, contact_id: uuid.UUID) -> list[WaitingStep]:
    """The contact's waits for events (one range of the partial index)."""
    return _waiting(bind, waiting_steps_query(tenant_id, contact_id=contact_id))


def waiting_steps_of(
    bind: Bind, tenant_id: uuid.UUID, journey_contact_ids: Sequence[uuid.UUID]
) -> list[WaitingStep]:
    """Those of these journey contacts that wait for an event."""
    if not journey_contact_ids:
        return []
    return _waiting(bind, waiting_steps_query(tenant_id, journey_contact_ids=journey_contact_ids))


def _waiting(bind: Bind, query: Any) -> list[WaitingStep]:
    steps = []
    for row in bind.execute(query):
        entered = as_utc(row.entered_at)
        assert entered is not None
        steps.append(
            WaitingStep(
                row.id,
                row.contact_id,
                row.step_seq,
                row.current_node_id,
                row.config,
                entered,
                as_utc(row.due_at),
            )
        )
    return steps


def events_since(
    bind: Bind,
    tenant_id: uuid.UUID,
    contact_ids: Sequence[uuid.UUID],
    names: Sequence[str],
    since: datetime,
) -> list[StoredEvent]:
    """The contacts' events of these names that happened at or after `since`, oldest first, in
    one statement for a whole batch (ix_contact_events_contact_name)."""
    if not names or not contact_ids:
        return []
    rows = bind.execute(
        select(
            ContactEvent.id,
            ContactEvent.contact_id,
            ContactEvent.name,
            ContactEvent.properties,
            ContactEvent.occurred_at,
            ContactEvent.event_id,
        )
        .where(
            ContactEvent.contact_id.in_(sorted(set(contact_ids))),
            ContactEvent.tenant_id == tenant_id,
            ContactEvent.name.in_(sorted(set(names))),
            ContactEvent.occurred_at >= since,
        )
        .order_by(ContactEvent.occurred_at, ContactEvent.id)
    )
    return [
        StoredEvent(
            r.id,
            r.contact_id,
            r.name,
            dict(r.properties or {}),
            as_utc(r.occurred_at),  # type: ignore[arg-type]
            r.event_id,
            False,
        )
        for r in rows
    ]
