"""SQLAlchemy 2.0 typed models of the upstream contract's tables.

One set of models serves PostgreSQL (production) and SQLite (the embedded default): JSON becomes
jsonb on PostgreSQL, and the uuid server default compiles per dialect. Columns beyond the contract
(step_seq, due_at, redispatch_count, ...) carry the engine's exactly-once bookkeeping.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement

from db.statuses import (
    ConsentAction,
    ContactStatus,
    ExecutionStatus,
    JourneyStatus,
    MessageDirection,
    MessageStatus,
    TenantStatus,
    check_in,
)


class gen_random_uuid(FunctionElement[uuid.UUID]):
    """Server-side uuid default: gen_random_uuid() on PostgreSQL, a random hex on SQLite."""

    type = Uuid()
    inherit_cache = True


@compiles(gen_random_uuid, "postgresql")
def _gen_random_uuid_pg(element: gen_random_uuid, compiler: Any, **kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(gen_random_uuid)
def _gen_random_uuid_default(element: gen_random_uuid, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy stores Uuid as 32 hex characters on SQLite.
    return "(lower(hex(randomblob(16))))"


JsonDocument = JSON().with_variant(JSONB(), "postgresql")
EMPTY_JSON = text("'{}'")
Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class Record(Base):
    """id, created_at and updated_at, as every contract table has them."""

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, default=uuid.uuid4, server_default=gen_random_uuid()
    )
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=text("CURRENT_TIMESTAMP")
    )
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp,
        nullable=False,
        server_default=text("CURRENT_TIMESTAMP"),
        onupdate=text("CURRENT_TIMESTAMP"),
    )


def tenant_fk() -> Mapped[uuid.UUID]:
    # Tenants are never deleted while they own rows: RESTRICT makes that a loud error.
    return mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False, index=False
    )


class Tenant(Record):
    __tablename__ = "tenants"
    __table_args__ = (CheckConstraint(check_in("status", TenantStatus), name="ck_tenants_status"),)

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=TenantStatus.ACTIVE.value
    )
    settings: Mapped[dict[str, Any]] = mapped_column(
        JsonDocument, nullable=False, server_default=EMPTY_JSON, default=dict
    )


class Contact(Record):
    __tablename__ = "contacts"
    __table_args__ = (
        # An inbound SMS finds its contact by tenant and E.164 phone (0011).
        Index("ix_contacts_tenant_phone", "tenant_id", "phone"),
    )

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(320))
    attributes: Mapped[dict[str, Any]] = mapped_column(
        JsonDocument, nullable=False, server_default=EMPTY_JSON, default=dict
    )
    opted_out_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Journey(Record):
    __tablename__ = "journeys"
    __table_args__ = (
        CheckConstraint(check_in("status", JourneyStatus), name="ck_journeys_status"),
        Index("ix_journeys_tenant_id", "tenant_id"),
        # The API's keyset pages (migration 0005): a page is a range scan from the cursor on.
        Index("ix_journeys_tenant_created", "tenant_id", "created_at", "id"),
    )

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=JourneyStatus.DRAFT.value
    )
    # Not a foreign key: journeys and their nodes reference each other, and upstream inserts
    # the journey before its nodes. The engine treats a dangling entry node as "node_not_found".
    entry_node_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class JourneyNode(Record):
    __tablename__ = "journey_nodes"

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    journey_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False
    )
    # The node type is validated by the engine, not the database, so that a node of a type this
    # worker does not know yet fails its contacts visibly instead of blocking upstream's insert.
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(
        JsonDocument, nullable=False, server_default=EMPTY_JSON, default=dict
    )
    next_node_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("journey_nodes.id", ondelete="SET NULL")
    )


class JourneyContact(Record):
    __tablename__ = "journey_contacts"
    __table_args__ = (
        CheckConstraint(check_in("status", ContactStatus), name="ck_journey_contacts_status"),
        # At most one open enrollment per contact and journey: enroll is idempotent through it.
        Index(
            "uq_journey_contacts_open_enrollment",
            "journey_id",
            "contact_id",
            unique=True,
            postgresql_where=text("status IN ('ACTIVE', 'WAITING', 'PAUSED')"),
            sqlite_where=text("status IN ('ACTIVE', 'WAITING', 'PAUSED')"),
        ),
        # The due-step dispatcher's scan: waits that are due and steps whose enqueue was lost.
        Index(
            "ix_journey_contacts_due",
            "due_at",
            postgresql_where=text("status IN ('ACTIVE', 'WAITING')"),
            sqlite_where=text("status IN ('ACTIVE', 'WAITING')"),
        ),
        # What the dispatcher publishes whatever the backlog (due waits, unpublished steps), per
        # tenant in due order: every tenant's oldest first, not everyone's (0010).
        Index(
            "ix_journey_contacts_tenant_due",
            "tenant_id",
            "due_at",
            postgresql_where=text("status = 'WAITING' OR (status = 'ACTIVE' AND unpublished)"),
            sqlite_where=text("status = 'WAITING' OR (status = 'ACTIVE' AND unpublished)"),
        ),
        Index("ix_journey_contacts_contact_id", "contact_id"),
        # A contact event finds the contact's waits in one range of this index, however many
        # contacts wait and however many finished enrollments the contact has (0011).
        Index(
            "ix_journey_contacts_waiting_contact",
            "contact_id",
            postgresql_where=text("status = 'WAITING'"),
            sqlite_where=text("status = 'WAITING'"),
        ),
        # Upstream-created rows carry no due_at; the dispatcher sweeps the stale ones.
        Index(
            "ix_journey_contacts_undated",
            "created_at",
            postgresql_where=text("status = 'ACTIVE' AND due_at IS NULL"),
            sqlite_where=text("status = 'ACTIVE' AND due_at IS NULL"),
        ),
        # The API's keyset pages of a journey's contacts, unfiltered and by status (0005).
        Index("ix_journey_contacts_journey_created", "journey_id", "created_at", "id"),
        Index(
            "ix_journey_contacts_journey_status_created",
            "journey_id",
            "status",
            "created_at",
            "id",
        ),
    )

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    journey_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False
    )
    contact_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=ContactStatus.ACTIVE.value
    )
    # Deliberately not a foreign key: a condition or split may point at a node that was never
    # created or was deleted while contacts waited on it. The engine meets a missing node with
    # FAILED 'node_not_found: <id>' instead of a constraint error that would retry forever.
    current_node_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    status_reason: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The number of the step to run next. A message for an older step is a duplicate.
    step_seq: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # When the current step is due: a wait's wake time, or (for ACTIVE rows) the moment after
    # which the dispatcher assumes the step's message was lost and publishes it again.
    due_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # How often the dispatcher re-published the current step; reset by every executed step.
    redispatch_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # The current step's message is known not to be in any queue (its publish failed, or a held
    # contact was released): the dispatcher publishes it at once (0010).
    unpublished: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=false(), default=False
    )


class JourneyNodeExecution(Record):
    __tablename__ = "journey_node_executions"
    __table_args__ = (
        CheckConstraint(
            check_in("status", ExecutionStatus), name="ck_journey_node_executions_status"
        ),
        # Exactly one execution per step of a journey contact, whatever is redelivered.
        Index("uq_journey_node_executions_step", "journey_contact_id", "step_seq", unique=True),
        # The API's keyset pages of a journey contact's executions and messages, read backwards
        # for newest first (0005). step_seq cannot serve: upstream's PENDING rows have none.
        Index(
            "ix_journey_node_executions_contact_created", "journey_contact_id", "created_at", "id"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    journey_contact_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("journey_contacts.id", ondelete="CASCADE"), nullable=False
    )
    node_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("journey_nodes.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=ExecutionStatus.PENDING.value
    )
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(
        JsonDocument, nullable=False, server_default=EMPTY_JSON, default=dict
    )
    executed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    step_seq: Mapped[int | None] = mapped_column(Integer)


class Conversation(Record):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("uq_conversations_tenant_contact", "tenant_id", "contact_id", unique=True),
        Index("ix_conversations_contact_id", "contact_id"),
    )

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    contact_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    )


class Message(Record):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(check_in("direction", MessageDirection), name="ck_messages_direction"),
        CheckConstraint(check_in("status", MessageStatus), name="ck_messages_status"),
        # One message per send execution: a re-run step can never text twice.
        Index("uq_messages_execution", "journey_node_execution_id", unique=True),
        Index("ix_messages_contact_id", "contact_id"),
        # The dispatcher re-enqueues deliveries whose task was lost.
        Index(
            "ix_messages_queued",
            "updated_at",
            postgresql_where=text("status = 'QUEUED'"),
            sqlite_where=text("status = 'QUEUED'"),
        ),
        # Deliveries deferred by a tenant's send rate, due from deliver_after on (0010).
        Index(
            "ix_messages_deliver_after",
            "deliver_after",
            postgresql_where=text("status = 'QUEUED' AND deliver_after IS NOT NULL"),
            sqlite_where=text("status = 'QUEUED' AND deliver_after IS NOT NULL"),
        ),
        # A delivery receipt names the provider's id: it must find one message (contract v2).
        Index(
            "uq_messages_provider_message_id",
            "tenant_id",
            "provider_message_id",
            unique=True,
            postgresql_where=text("provider_message_id IS NOT NULL"),
            sqlite_where=text("provider_message_id IS NOT NULL"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    # Filled by the delivery task, off the node's hot path.
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("conversations.id", ondelete="SET NULL")
    )
    # Null for an inbound message from a phone the tenant does not know (contract Version 2).
    contact_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=True
    )
    journey_node_execution_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("journey_node_executions.id", ondelete="SET NULL")
    )
    direction: Mapped[str] = mapped_column(String(16), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=MessageStatus.QUEUED.value
    )
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # The SMS provider the message went to; while QUEUED, the one it is committed to because an
    # earlier attempt there may have been accepted (tasks/delivery.py).
    provider: Mapped[str | None] = mapped_column(Text)
    # The provider's id for the message, from its answer (upstream contract, Version 2).
    provider_message_id: Mapped[str | None] = mapped_column(Text)
    # A delivery's claim on the message (db/delivery.py): until then no other delivery of it
    # starts; a worker killed mid-call leaves a lease that simply expires.
    delivery_lease_until: Mapped[datetime | None] = mapped_column(Timestamp)
    # Deferred by its tenant's send rate: the dispatcher publishes its delivery from then on.
    deliver_after: Mapped[datetime | None] = mapped_column(Timestamp)
    # The provider's code for a failed or undelivered message, from its receipt (0011).
    error_code: Mapped[str | None] = mapped_column(Text)
    # An inbound message's phones as the provider gave them: who wrote (kept even when no
    # contact has that phone, for support) and to which of the tenant's numbers (0011).
    from_phone: Mapped[str | None] = mapped_column(String(32))
    to_phone: Mapped[str | None] = mapped_column(String(32))


class EarlyDeliveryReceipt(Base):
    """A delivery receipt that arrived before its message's provider id was visible: applied
    (and deleted) when the message gets that id (db/receipts.py). One row per provider id, the
    furthest status seen so far."""

    __tablename__ = "early_delivery_receipts"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True
    )
    provider_message_id: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    error_code: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=text("CURRENT_TIMESTAMP")
    )


class ContactEvent(Record):
    """Something that happened to a contact (journeys.contact_event, or an inbound SMS as
    `sms_reply`): what wait_for_event nodes wait for."""

    __tablename__ = "contact_events"
    __table_args__ = (
        # The same event_id is applied once, whatever is redelivered (ON CONFLICT DO NOTHING).
        Index(
            "uq_contact_events_event_id",
            "tenant_id",
            "event_id",
            unique=True,
            postgresql_where=text("event_id IS NOT NULL"),
            sqlite_where=text("event_id IS NOT NULL"),
        ),
        # A contact entering a wait looks for an event that arrived while it was entering.
        Index("ix_contact_events_contact_name", "contact_id", "name", "occurred_at"),
    )

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    contact_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    properties: Mapped[dict[str, Any]] = mapped_column(
        JsonDocument, nullable=False, server_default=EMPTY_JSON, default=dict
    )
    occurred_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    event_id: Mapped[str | None] = mapped_column(String(255))


class ContactConsentChange(Record):
    """The audit trail of opt-outs and opt-ins: who, which way, when, and the inbound message
    that said so (a compliance officer's first question)."""

    __tablename__ = "contact_consent_changes"
    __table_args__ = (
        CheckConstraint(check_in("action", ConsentAction), name="ck_contact_consent_action"),
        Index("ix_contact_consent_changes_contact", "contact_id", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    contact_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    )
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    # The inbound message that carried the keyword (null if it was deleted since).
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("messages.id", ondelete="SET NULL")
    )
    keyword: Mapped[str] = mapped_column(Text, nullable=False)


class CallLog(Record):
    __tablename__ = "call_logs"
    __table_args__ = (Index("ix_call_logs_contact_id", "contact_id"),)

    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    contact_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)


class DispatchLane(Base):
    """What the dispatcher last saw of a step queue: a late step counts as lost only once the
    queues have been quiet for a while (tasks/dispatch.py)."""

    __tablename__ = "dispatch_lanes"

    lane: Mapped[str] = mapped_column(String(128), primary_key=True)
    depth: Mapped[int | None] = mapped_column(Integer)
    observed_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    busy_at: Mapped[datetime | None] = mapped_column(Timestamp)


class TaskFailure(Base):
    """Dead letters: messages that can never succeed, kept where an operator will see them."""

    __tablename__ = "task_failures"
    __table_args__ = (Index("ix_task_failures_created_at", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, default=uuid.uuid4, server_default=gen_random_uuid()
    )
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=text("CURRENT_TIMESTAMP")
    )
    task_name: Mapped[str] = mapped_column(String(128), nullable=False)
    task_id: Mapped[str | None] = mapped_column(String(64))
    # No foreign keys: the ids may be malformed, unknown, or another tenant's.
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    journey_contact_id: Mapped[str | None] = mapped_column(String(64))
    kwargs: Mapped[dict[str, Any]] = mapped_column(
        JsonDocument, nullable=False, server_default=EMPTY_JSON, default=dict
    )
    error: Mapped[str] = mapped_column(Text, nullable=False)


class StatsRefresh(Base):
    """When a statistics view (db/stats.py) was last refreshed, written in the refresh's
    transaction so readers see the view's rows and their age change together."""

    __tablename__ = "stats_refreshes"

    view_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The moment the refresh's snapshot was taken: the data is as of then.
    refreshed_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)


class ContactImport(Base):
    """One `journey-worker contacts import` of a CSV file: how far it got. Each chunk of rows
    advances `applied_rows` in the transaction that updates its contacts, so a crashed import
    resumes after its last committed chunk and never applies one twice."""

    __tablename__ = "contact_imports"
    __table_args__ = (
        CheckConstraint("status IN ('RUNNING', 'COMPLETED')", name="ck_contact_imports_status"),
        # One running import per file and tenant: a second start resumes it instead.
        Index(
            "uq_contact_imports_running",
            "tenant_id",
            "source_sha256",
            unique=True,
            sqlite_where=text("status = 'RUNNING'"),
            postgresql_where=text("status = 'RUNNING'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, default=uuid.uuid4, server_default=gen_random_uuid()
    )
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    source: Mapped[str] = mapped_column(Text, nullable=False)
    source_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="RUNNING")
    total_rows: Mapped[int | None] = mapped_column(BigInteger)
    # Rows of the file (in file order) whose updates are committed.
    applied_rows: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    updated_contacts: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("0")
    )
    skipped_contacts: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("0")
    )
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=text("CURRENT_TIMESTAMP")
    )
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=text("CURRENT_TIMESTAMP")
    )
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ContactSend(Base):
    """A counted send to a contact, for the tenant's frequency cap (0012). Written in the same
    transaction as the send's message, under a lock on the contact, so the check and the count
    are one step; a message the provider refused gives its row back (db/send_counters.py)."""

    __tablename__ = "contact_sends"
    __table_args__ = (
        Index("ix_contact_sends_contact_sent_at", "contact_id", "sent_at"),
        # Retention drops rows older than any cap looks back.
        Index("ix_contact_sends_sent_at", "sent_at"),
    )

    # The message's own deterministic id: a re-run of the same step counts it once.
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    contact_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    )
    journey_contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    sent_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)


class JourneyNodeRedirect(Base):
    """Where contacts go whose current node upstream deleted: the `redirects` map of
    journeys.journey_updated (0012). to_node_id null: the journey ends there for them."""

    __tablename__ = "journey_node_redirects"

    journey_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("journeys.id", ondelete="CASCADE"), primary_key=True
    )
    # The deleted node: no foreign key, it is gone (or about to be).
    from_node_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    to_node_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, nullable=False, server_default=text("CURRENT_TIMESTAMP")
    )
