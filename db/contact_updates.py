"""Batch contact updates: merge attributes into many of a tenant's contacts in one statement."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from db.clock import db_now
from db.dialects import is_postgresql
from db.models import Contact

# jsonb `||`: a shallow merge, the update_contact node's semantics; a null value is stored as
# null. Rows of other tenants and unknown ids simply match nothing and come back as skipped.
MERGE_SQL = text(
    """
    UPDATE contacts c
       SET attributes = c.attributes || u.set, updated_at = now()
      FROM jsonb_to_recordset(CAST(:updates AS jsonb)) AS u(contact_id uuid, set jsonb)
     WHERE c.id = u.contact_id AND c.tenant_id = :tenant_id
    RETURNING c.id
    """
)


def merge_attributes(
    session: Session,
    tenant_id: uuid.UUID,
    updates: Mapping[uuid.UUID, Mapping[str, Any]],
) -> set[uuid.UUID]:
    """Merge each contact's `set` into its attributes; returns the ids that were updated.

    `updates` has one entry per contact (the caller merges duplicates in order), so no row
    is matched twice by the UPDATE ... FROM (PostgreSQL would apply only one of them)."""
    if not updates:
        return set()
    if is_postgresql(session):
        payload = json.dumps(
            [{"contact_id": str(cid), "set": dict(values)} for cid, values in updates.items()]
        )
        rows = session.execute(MERGE_SQL, {"updates": payload, "tenant_id": tenant_id})
        return set(rows.scalars())
    return _merge_sqlite(session, tenant_id, updates)


def _merge_sqlite(
    session: Session, tenant_id: uuid.UUID, updates: Mapping[uuid.UUID, Mapping[str, Any]]
) -> set[uuid.UUID]:
    # The embedded default: SQLite's json_patch deletes keys set to null, so merge in Python
    # within the task's one transaction (SQLite has a single writer).
    ids: Sequence[uuid.UUID] = list(updates)
    current = session.execute(
        select(Contact.id, Contact.attributes).where(
            Contact.id.in_(ids), Contact.tenant_id == tenant_id
        )
    ).all()
    for contact_id, attributes in current:
        session.execute(
            update(Contact)
            .where(Contact.id == contact_id, Contact.tenant_id == tenant_id)
            .values(attributes={**(attributes or {}), **updates[contact_id]}, updated_at=db_now())
        )
    return {contact_id for contact_id, _ in current}
