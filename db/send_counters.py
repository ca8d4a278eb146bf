"""Counted sends for frequency caps: lock the contacts, read their counted send times, count new
sends, give a slot back. SQL only; the rule (tasks/policy/frequency.py) decides.

The caller holds one transaction around `lock_contacts`, `counted_sends`, `count_sends` and the
step's own write, so the check and the count are one atomic step: a second transaction sending
to the same contact waits on the contact's row lock and then counts the first one's sends.
`FOR NO KEY UPDATE` serializes senders without blocking inserts that merely reference the
contact (foreign keys take KEY SHARE). SQLite needs no lock: its one writer holds the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db.clock import as_utc, db_now, to_utc
from db.models import Contact, ContactSend


@dataclass(frozen=True)
class CountedSend:
    message_id: uuid.UUID
    contact_id: uuid.UUID
    journey_contact_id: uuid.UUID | None
    sent_at: datetime


def lock_contacts(
    connection: Connection, tenant_id: uuid.UUID, contact_ids: Iterable[uuid.UUID]
) -> datetime:
    """Lock the contacts (in id order: no deadlock between overlapping batches) and return the
    database's clock once the locks are held: the instant the counts are taken at."""
    ids = sorted(set(contact_ids))
    if connection.dialect.name == "postgresql" and ids:
        connection.execute(
            select(Contact.id)
            .where(Contact.id.in_(ids), Contact.tenant_id == tenant_id)
            .order_by(Contact.id)
            .with_for_update(key_share=True)
        ).all()
    clock = func.clock_timestamp() if connection.dialect.name == "postgresql" else db_now()
    return as_utc(connection.execute(select(clock)).scalar_one())  # type: ignore[return-value]


def counted_sends(
    connection: Connection,
    tenant_id: uuid.UUID,
    contact_ids: Iterable[uuid.UUID],
    since: datetime,
) -> dict[uuid.UUID, list[datetime]]:
    """Each contact's counted send times at or after `since`."""
    ids = sorted(set(contact_ids))
    found: dict[uuid.UUID, list[datetime]] = {contact_id: [] for contact_id in ids}
    if not ids:
        return found
    rows = connection.execute(
        select(ContactSend.contact_id, ContactSend.sent_at).where(
            ContactSend.tenant_id == tenant_id,
            ContactSend.contact_id.in_(ids),
            ContactSend.sent_at >= to_utc(since),
        )
    )
    for contact_id, sent_at in rows:
        found[contact_id].append(as_utc(sent_at))  # type: ignore[arg-type]
    return found


def count_sends(
    connection: Connection, tenant_id: uuid.UUID, sends: Sequence[CountedSend]
) -> set[uuid.UUID]:
    """Count the sends; returns the message ids this call counted. A send already counted (the
    same step, counted by another worker that took it first) is not counted again, and is not
    this call's to give back."""
    if not sends:
        return set()
    rows = [
        {
            "message_id": s.message_id,
            "tenant_id": tenant_id,
            "contact_id": s.contact_id,
            "journey_contact_id": s.journey_contact_id,
            "sent_at": to_utc(s.sent_at),
        }
        for s in sends
    ]
    dialect_insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = (
        dialect_insert(ContactSend)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["message_id"])
        .returning(ContactSend.message_id)
    )
    return set(connection.execute(statement).scalars())


def release_sends(connection: Connection, message_ids: Iterable[uuid.UUID]) -> int:
    """Give the slots back: the messages were never written (their step's claim did not hold) or
    the provider refused them."""
    ids = list(message_ids)
    if not ids:
        return 0
    result = connection.execute(delete(ContactSend).where(ContactSend.message_id.in_(ids)))
    return result.rowcount or 0


def purge_sends_batch(bind: Connection | Session, *, older_than: datetime, batch_size: int) -> int:
    """Delete one batch of counted sends older than any cap can look back (retention)."""
    victims = (
        select(ContactSend.message_id)
        .where(ContactSend.sent_at < to_utc(older_than))
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    result = bind.execute(
        delete(ContactSend).where(ContactSend.message_id.in_(victims.scalar_subquery()))
    )
    return result.rowcount or 0
