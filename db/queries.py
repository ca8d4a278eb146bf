"""Every statement of the worker's hot path, written once for PostgreSQL and SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Row,
    case,
    delete,
    exists,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.functions import FunctionElement

from db.models import (
    Contact,
    Conversation,
    Journey,
    JourneyContact,
    JourneyNode,
    JourneyNodeExecution,
    Message,
    TaskFailure,
    Tenant,
    gen_random_uuid,
)
from db.statuses import OPEN_CONTACT_STATUSES, ContactStatus, MessageStatus

JC = JourneyContact
JNE = JourneyNodeExecution
RECENT_EXECUTIONS_LIMIT = 10


class db_now(FunctionElement[datetime]):
    """The database's clock: waits and due times never trust a worker's clock."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(db_now, "postgresql")
def _db_now_pg(element: db_now, compiler: Any, **kw: Any) -> str:
    return "now()"


@compiles(db_now)
def _db_now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


class seconds_from_now(FunctionElement[datetime]):
    type = DateTime(timezone=True)
    inherit_cache = True

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        super().__init__()


@compiles(seconds_from_now, "postgresql")
def _seconds_from_now_pg(element: seconds_from_now, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(), not now(): a deadline counts from this moment, not from when a long
    # transaction began.
    return f"(clock_timestamp() + make_interval(secs => {element.seconds!r}))"


@compiles(seconds_from_now)
def _seconds_from_now_sqlite(element: seconds_from_now, compiler: Any, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', '+{element.seconds!r} seconds')"


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything the worker stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _dialect_insert(session: Session | Connection) -> Any:
    bind = session if isinstance(session, Connection) else session.get_bind()
    name = bind.dialect.name
    return postgresql.insert if name == "postgresql" else sqlite.insert


# --- executing one node --------------------------------------------------------------------


@dataclass(frozen=True)
class StepState:
    """The journey contact, locked for this transaction, with what gates its next step."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    journey_id: uuid.UUID
    contact_id: uuid.UUID
    status: str
    current_node_id: uuid.UUID | None
    step_seq: int
    due_at: datetime | None
    journey_status: str
    tenant_status: str
    phone: str | None
    email: str | None
    attributes: dict[str, Any]
    opted_out_at: datetime | None
    db_now: datetime


@dataclass(frozen=True)
class RecentExecution:
    id: uuid.UUID
    node_id: uuid.UUID | None
    node_type: str | None
    status: str
    step_seq: int | None
    executed_at: datetime | None
    created_at: datetime


# --- lookups behind the cache --------------------------------------------------------------


def journey_nodes(
    session: Session, tenant_id: uuid.UUID, journey_id: uuid.UUID
) -> Sequence[Row[Any]]:
    stmt = select(
        JourneyNode.id,
        JourneyNode.journey_id,
        JourneyNode.type,
        JourneyNode.config,
        JourneyNode.next_node_id,
    ).where(JourneyNode.journey_id == journey_id, JourneyNode.tenant_id == tenant_id)
    return session.execute(stmt).all()


def tenant_row(session: Session, tenant_id: uuid.UUID) -> Row[Any] | None:
    stmt = select(Tenant.id, Tenant.name, Tenant.status, Tenant.settings).where(
        Tenant.id == tenant_id
    )
    return session.execute(stmt).one_or_none()


# --- enrollment ----------------------------------------------------------------------------


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
        _dialect_insert(session)(JC)
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


# --- the due-step dispatcher ---------------------------------------------------------------


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


def resume_held_contacts(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    reasons: Sequence[str],
    journey_id: uuid.UUID | None = None,
) -> int:
    """Release contacts held PAUSED for one of `reasons`: the dispatcher picks them up now."""
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


# --- message delivery ----------------------------------------------------------------------


@dataclass(frozen=True)
class OutboundMessage:
    id: uuid.UUID
    tenant_id: uuid.UUID
    contact_id: uuid.UUID
    conversation_id: uuid.UUID | None
    status: str
    body: str
    phone: str | None
    # The provider the message is committed to, if an earlier attempt may have reached it.
    provider: str | None = None


def lock_message(
    session: Session | Connection, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> OutboundMessage | None:
    stmt = (
        select(
            Message.id,
            Message.tenant_id,
            Message.contact_id,
            Message.conversation_id,
            Message.status,
            Message.body,
            Contact.phone,
            Message.provider,
        )
        .join(Contact, Contact.id == Message.contact_id)
        .where(Message.id == message_id, Message.tenant_id == tenant_id)
        .with_for_update(of=Message)
    )
    row = session.execute(stmt).one_or_none()
    return OutboundMessage(*row) if row else None


def ensure_conversation(
    session: Session | Connection, tenant_id: uuid.UUID, contact_id: uuid.UUID
) -> uuid.UUID:
    """The contact's conversation, created once whatever the concurrency (ON CONFLICT)."""
    session.execute(
        _dialect_insert(session)(Conversation)
        .values(id=uuid.uuid4(), tenant_id=tenant_id, contact_id=contact_id)
        .on_conflict_do_nothing(index_elements=["tenant_id", "contact_id"])
    )
    return session.execute(
        select(Conversation.id).where(
            Conversation.tenant_id == tenant_id, Conversation.contact_id == contact_id
        )
    ).scalar_one()


def finish_message(
    session: Session | Connection,
    message_id: uuid.UUID,
    *,
    status: str,
    conversation_id: uuid.UUID | None = None,
    error: str | None = None,
    provider: str | None = None,
    provider_message_id: str | None = None,
) -> str | None:
    """Record the outcome; returns the provider_message_id stored (None when the provider gave
    none, or gave one that another message of the tenant already holds: the message is sent
    all the same, and a duplicate id from a provider must not turn it into a failure)."""
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "attempts": Message.attempts + 1,
        "updated_at": db_now(),
    }
    if conversation_id is not None:
        values["conversation_id"] = conversation_id
    if status == MessageStatus.SENT.value:
        values["sent_at"] = db_now()
    if provider is not None:
        values["provider"] = provider
    if provider_message_id is not None:
        other = aliased(Message)
        taken = exists().where(
            other.tenant_id == Message.tenant_id,
            other.provider_message_id == provider_message_id,
            other.id != Message.id,
        )
        values["provider_message_id"] = case((~taken, provider_message_id), else_=None)
    return session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(**values)
        .returning(Message.provider_message_id)
    ).scalar()


def pin_message_provider(
    session: Session | Connection,
    message_id: uuid.UUID,
    *,
    expected: str | None,
    provider: str | None,
) -> bool:
    """Move a QUEUED message's provider from `expected` to `provider`; False if it no longer
    says `expected` (or is no longer QUEUED)."""
    current = Message.provider.is_(None) if expected is None else Message.provider == expected
    result = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.QUEUED.value, current)
        .values(provider=provider, updated_at=db_now())
    )
    return bool(result.rowcount)


def note_delivery_failure(session: Session | Connection, message_id: uuid.UUID, error: str) -> None:
    """A failed attempt of a message that stays QUEUED (it will be retried): say why."""
    session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.QUEUED.value)
        .values(error=error, attempts=Message.attempts + 1, updated_at=db_now())
    )


def claim_stale_messages(
    session: Session, *, batch_size: int, grace_seconds: float
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """QUEUED messages whose delivery task seems lost: touch them and return (tenant, id)."""
    claim = (
        select(Message.id)
        .where(
            Message.status == MessageStatus.QUEUED.value,
            Message.updated_at <= seconds_from_now(-grace_seconds),
        )
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Message)
        .where(Message.id.in_(claim.scalar_subquery()))
        .values(updated_at=db_now())
        .returning(Message.tenant_id, Message.id)
    )
    return [(row[0], row[1]) for row in session.execute(stmt)]


# --- failures ------------------------------------------------------------------------------


def record_task_failure(
    session: Session,
    *,
    task_name: str,
    task_id: str | None,
    tenant_id: str | None,
    journey_contact_id: str | None,
    kwargs: dict[str, Any],
    error: str,
) -> None:
    session.execute(
        insert(TaskFailure).values(
            id=uuid.uuid4(),
            task_name=task_name,
            task_id=task_id,
            tenant_id=tenant_id,
            journey_contact_id=journey_contact_id,
            kwargs=kwargs,
            error=error,
        )
    )


def fail_open_journey_contact(
    session: Session, tenant_id: uuid.UUID, journey_contact_id: uuid.UUID, reason: str
) -> bool:
    """FAILED with the reason, if the contact is still on the journey."""
    result = session.execute(
        update(JC)
        .where(
            JC.id == journey_contact_id,
            JC.tenant_id == tenant_id,
            JC.status.in_([s.value for s in OPEN_CONTACT_STATUSES]),
        )
        .values(
            status=ContactStatus.FAILED.value,
            status_reason=reason,
            due_at=None,
            completed_at=db_now(),
            updated_at=db_now(),
        )
    )
    return bool(result.rowcount)


def fail_queued_message(
    session: Session, tenant_id: uuid.UUID, message_id: uuid.UUID, reason: str
) -> None:
    session.execute(
        update(Message)
        .where(
            Message.id == message_id,
            Message.tenant_id == tenant_id,
            Message.status == MessageStatus.QUEUED.value,
        )
        .values(status=MessageStatus.FAILED.value, error=reason, updated_at=db_now())
    )


# --- retention -----------------------------------------------------------------------------


def purge_executions_batch(session: Session, *, older_than_days: int, batch_size: int) -> int:
    """Delete one batch of executions older than the cutoff, oldest first.

    Small batches in their own transactions, rows taken with SKIP LOCKED through the
    executed_at index: the hot path never waits on the purge, and the purge never scans.
    """
    victims = (
        select(JNE.id)
        .where(
            JNE.executed_at.is_not(None),
            JNE.executed_at < seconds_from_now(-older_than_days * 86400),
        )
        .order_by(JNE.executed_at.desc())
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    result = session.execute(delete(JNE).where(JNE.id.in_(victims.scalar_subquery())))
    return result.rowcount or 0
