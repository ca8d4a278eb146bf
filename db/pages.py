"""Keyset pages for the read-only API: every statement carries the tenant, every page is one
index range scan that starts at the cursor, so page 10,000 costs what page 1 costs.

A page is ordered by (created_at, id): ascending for journeys and journey contacts (rows added
during a walk land after it, so a walk that keeps going sees them once), descending for a journey
contact's executions and messages (newest first). migration 0005 made the index for each. A page
asks for limit + 1 rows: the extra row only says whether another page exists.

A parent that is unknown or another tenant's raises NotFound. The parent is checked only when a
page comes back empty: rows found under `tenant_id = :tenant` already prove it is the tenant's,
so the common case is one statement and one round trip.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, exists, select, tuple_

from db.models import Journey, JourneyContact, JourneyNodeExecution, Message

MAX_PAGE_SIZE = 1000


class NotFound(LookupError):
    """The parent row does not exist, or belongs to another tenant (the API cannot tell)."""


@dataclass(frozen=True)
class Keyset:
    """Where a page ends: the (created_at, id) of its last row."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    # The key to continue after, or None on the last page.
    next_key: Keyset | None


JNE = JourneyNodeExecution
JC = JourneyContact


def _after(
    created_at: Any, id_: Any, key: Keyset | None, *, descending: bool
) -> list[ColumnElement[bool]]:
    if key is None:
        return []
    # A row comparison: PostgreSQL turns it into one index condition, the scan's start.
    row, bound = tuple_(created_at, id_), tuple_(key.created_at, key.id)
    return [row < bound if descending else row > bound]


def _order(created_at: Any, id_: Any, *, descending: bool) -> list[Any]:
    return [created_at.desc(), id_.desc()] if descending else [created_at, id_]


def journeys_statement(tenant_id: uuid.UUID, after: Keyset | None, limit: int) -> Select[Any]:
    J = Journey
    return (
        select(J.id, J.name, J.status, J.entry_node_id, J.created_at, J.updated_at)
        .where(J.tenant_id == tenant_id, *_after(J.created_at, J.id, after, descending=False))
        .order_by(*_order(J.created_at, J.id, descending=False))
        .limit(limit + 1)
    )


def journey_contacts_statement(
    tenant_id: uuid.UUID,
    journey_id: uuid.UUID,
    status: str | None,
    after: Keyset | None,
    limit: int,
) -> Select[Any]:
    conditions = [JC.journey_id == journey_id, JC.tenant_id == tenant_id]
    if status is not None:
        conditions.append(JC.status == status)
    return (
        select(
            JC.id,
            JC.journey_id,
            JC.contact_id,
            JC.status,
            JC.current_node_id,
            JC.status_reason,
            JC.completed_at,
            JC.due_at,
            JC.created_at,
            JC.updated_at,
        )
        .where(*conditions, *_after(JC.created_at, JC.id, after, descending=False))
        .order_by(*_order(JC.created_at, JC.id, descending=False))
        .limit(limit + 1)
    )


def executions_statement(
    tenant_id: uuid.UUID, journey_contact_id: uuid.UUID, after: Keyset | None, limit: int
) -> Select[Any]:
    return (
        select(
            JNE.id,
            JNE.journey_contact_id,
            JNE.node_id,
            JNE.status,
            JNE.error,
            JNE.result,
            JNE.executed_at,
            JNE.step_seq,
            JNE.created_at,
        )
        .where(
            JNE.journey_contact_id == journey_contact_id,
            JNE.tenant_id == tenant_id,
            *_after(JNE.created_at, JNE.id, after, descending=True),
        )
        .order_by(*_order(JNE.created_at, JNE.id, descending=True))
        .limit(limit + 1)
    )


def messages_statement(
    tenant_id: uuid.UUID, journey_contact_id: uuid.UUID, after: Keyset | None, limit: int
) -> Select[Any]:
    """A journey contact's messages are those its steps sent: the walk goes down the executions'
    index, newest first, and meets each step's message through uq_messages_execution. The key is
    the sending execution's (created_at, id), so no sort and no scan of the contact's messages."""
    M = Message
    return (
        select(
            M.id,
            M.contact_id,
            M.conversation_id,
            M.journey_node_execution_id,
            JNE.journey_contact_id,
            JNE.node_id,
            M.direction,
            M.body,
            M.status,
            M.sent_at,
            M.error,
            M.attempts,
            M.created_at,
            M.updated_at,
            JNE.created_at.label("step_created_at"),
        )
        .select_from(JNE)
        .join(M, M.journey_node_execution_id == JNE.id)
        .where(
            JNE.journey_contact_id == journey_contact_id,
            JNE.tenant_id == tenant_id,
            M.tenant_id == tenant_id,
            *_after(JNE.created_at, JNE.id, after, descending=True),
        )
        .order_by(*_order(JNE.created_at, JNE.id, descending=True))
        .limit(limit + 1)
    )


def _fetch(
    conn: Connection,
    statement: Select[Any],
    limit: int,
    key_of: Callable[[dict[str, Any]], Keyset],
    parent_exists: Select[Any] | None,
) -> Page:
    rows = [dict(row) for row in conn.execute(statement).mappings()]
    if not rows and parent_exists is not None and not conn.execute(parent_exists).scalar():
        raise NotFound
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, key_of(rows[-1]) if more else None)


def _by_created(row: dict[str, Any]) -> Keyset:
    return Keyset(row["created_at"], row["id"])


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")


def journeys_page(conn: Connection, tenant_id: uuid.UUID, after: Keyset | None, limit: int) -> Page:
    _check_limit(limit)
    return _fetch(conn, journeys_statement(tenant_id, after, limit), limit, _by_created, None)


def _journey_is_tenants(tenant_id: uuid.UUID, journey_id: uuid.UUID) -> Select[Any]:
    return select(exists().where(and_(Journey.id == journey_id, Journey.tenant_id == tenant_id)))


def _journey_contact_is_tenants(tenant_id: uuid.UUID, journey_contact_id: uuid.UUID) -> Select[Any]:
    return select(exists().where(and_(JC.id == journey_contact_id, JC.tenant_id == tenant_id)))


def journey_contacts_page(
    conn: Connection,
    tenant_id: uuid.UUID,
    journey_id: uuid.UUID,
    status: str | None,
    after: Keyset | None,
    limit: int,
) -> Page:
    _check_limit(limit)
    statement = journey_contacts_statement(tenant_id, journey_id, status, after, limit)
    return _fetch(conn, statement, limit, _by_created, _journey_is_tenants(tenant_id, journey_id))


def executions_page(
    conn: Connection,
    tenant_id: uuid.UUID,
    journey_contact_id: uuid.UUID,
    after: Keyset | None,
    limit: int,
) -> Page:
    _check_limit(limit)
    statement = executions_statement(tenant_id, journey_contact_id, after, limit)
    parent = _journey_contact_is_tenants(tenant_id, journey_contact_id)
    return _fetch(conn, statement, limit, _by_created, parent)


def messages_page(
    conn: Connection,
    tenant_id: uuid.UUID,
    journey_contact_id: uuid.UUID,
    after: Keyset | None,
    limit: int,
) -> Page:
    _check_limit(limit)
    statement = messages_statement(tenant_id, journey_contact_id, after, limit)
    parent = _journey_contact_is_tenants(tenant_id, journey_contact_id)

    def by_step(row: dict[str, Any]) -> Keyset:
        return Keyset(row["step_created_at"], row["journey_node_execution_id"])

    page = _fetch(conn, statement, limit, by_step, parent)
    for row in page.rows:
        row.pop("step_created_at")
    return page


def journey_exists(conn: Connection, tenant_id: uuid.UUID, journey_id: uuid.UUID) -> bool:
    return bool(conn.execute(_journey_is_tenants(tenant_id, journey_id)).scalar())


def journey_tenant(conn: Connection, journey_id: uuid.UUID) -> uuid.UUID:
    """The tenant owning a journey: operator commands (export, stats) name only the journey,
    then read through the same tenant-scoped statements the API uses."""
    tenant_id = conn.execute(
        select(Journey.tenant_id).where(Journey.id == journey_id)
    ).scalar_one_or_none()
    if tenant_id is None:
        raise NotFound
    return tenant_id
