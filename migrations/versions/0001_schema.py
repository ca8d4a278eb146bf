"""The schema of the upstream contract plus the worker's bookkeeping columns (db/models.py).

Written out explicitly rather than from the models, so that this revision stays what it was when
later revisions change the models. Runs on PostgreSQL and on SQLite (the embedded default).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    # Children before parents: the order downgrade drops them in, reversed for creation.
    "task_failures",
    "call_logs",
    "messages",
    "conversations",
    "journey_node_executions",
    "journey_contacts",
    "journey_nodes",
    "journeys",
    "contacts",
    "tenants",
)


class _Defaults:
    """Server defaults per dialect: what the contract asks of PostgreSQL, equivalents on SQLite."""

    def __init__(self, dialect: str) -> None:
        pg = dialect == "postgresql"
        # SQLAlchemy's Uuid is CHAR(32) hex on SQLite, so the SQLite default is 32 hex digits.
        self.uuid = sa.text("gen_random_uuid()" if pg else "(lower(hex(randomblob(16))))")
        self.now = sa.text("now()" if pg else "CURRENT_TIMESTAMP")
        self.empty_json = sa.text("'{}'::jsonb" if pg else "'{}'")
        self.json: sa.types.TypeEngine[object] = postgresql.JSONB() if pg else sa.JSON()


def _check_in(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _record(d: _Defaults) -> list[sa.Column[object]]:
    """id, created_at, updated_at: every contract table has them."""
    return [
        sa.Column("id", sa.Uuid(), primary_key=True, server_default=d.uuid),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=d.now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=d.now),
    ]


def _tenant_id() -> sa.Column[object]:
    # RESTRICT: a tenant that still owns rows cannot be deleted by accident.
    return sa.Column(
        "tenant_id",
        sa.Uuid(),
        sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
        nullable=False,
    )


def _fk(name: str, target: str, ondelete: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.Uuid(), sa.ForeignKey(target, ondelete=ondelete), nullable=nullable)


def upgrade() -> None:
    d = _Defaults(op.get_context().dialect.name)
    timestamp = sa.DateTime(timezone=True)

    op.create_table(
        "tenants",
        *_record(d),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="ACTIVE"),
        sa.Column("settings", d.json, nullable=False, server_default=d.empty_json),
        sa.CheckConstraint(_check_in("status", "ACTIVE", "SUSPENDED"), name="ck_tenants_status"),
    )

    op.create_table(
        "contacts",
        *_record(d),
        _tenant_id(),
        sa.Column("phone", sa.String(32)),
        sa.Column("email", sa.String(320)),
        sa.Column("attributes", d.json, nullable=False, server_default=d.empty_json),
        sa.Column("opted_out_at", timestamp),
    )

    op.create_table(
        "journeys",
        *_record(d),
        _tenant_id(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="DRAFT"),
        # Not a foreign key: upstream inserts a journey before its nodes.
        sa.Column("entry_node_id", sa.Uuid()),
        sa.CheckConstraint(
            _check_in("status", "DRAFT", "ACTIVE", "PAUSED", "ARCHIVED"),
            name="ck_journeys_status",
        ),
    )
    op.create_index("ix_journeys_tenant_id", "journeys", ["tenant_id"])

    op.create_table(
        "journey_nodes",
        *_record(d),
        _tenant_id(),
        _fk("journey_id", "journeys.id", "CASCADE"),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("config", d.json, nullable=False, server_default=d.empty_json),
        _fk("next_node_id", "journey_nodes.id", "SET NULL", nullable=True),
    )

    open_statuses = _check_in("status", "ACTIVE", "WAITING", "PAUSED")
    due_statuses = _check_in("status", "ACTIVE", "WAITING")
    op.create_table(
        "journey_contacts",
        *_record(d),
        _tenant_id(),
        _fk("journey_id", "journeys.id", "CASCADE"),
        _fk("contact_id", "contacts.id", "CASCADE"),
        sa.Column("status", sa.String(16), nullable=False, server_default="ACTIVE"),
        # Not a foreign key: a branch may name a node that was never created or was deleted;
        # the engine fails such a contact with node_not_found instead of a constraint error.
        sa.Column("current_node_id", sa.Uuid()),
        sa.Column("status_reason", sa.Text()),
        sa.Column("completed_at", timestamp),
        sa.Column("step_seq", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("due_at", timestamp),
        sa.Column("redispatch_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint(
            _check_in("status", "ACTIVE", "WAITING", "PAUSED", "COMPLETED", "EXITED", "FAILED"),
            name="ck_journey_contacts_status",
        ),
    )
    op.create_index(
        "uq_journey_contacts_open_enrollment",
        "journey_contacts",
        ["journey_id", "contact_id"],
        unique=True,
        postgresql_where=sa.text(open_statuses),
        sqlite_where=sa.text(open_statuses),
    )
    op.create_index(
        "ix_journey_contacts_due",
        "journey_contacts",
        ["due_at"],
        postgresql_where=sa.text(due_statuses),
        sqlite_where=sa.text(due_statuses),
    )
    op.create_index("ix_journey_contacts_contact_id", "journey_contacts", ["contact_id"])

    op.create_table(
        "journey_node_executions",
        *_record(d),
        _tenant_id(),
        _fk("journey_contact_id", "journey_contacts.id", "CASCADE"),
        _fk("node_id", "journey_nodes.id", "SET NULL", nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="PENDING"),
        sa.Column("error", sa.Text()),
        sa.Column("result", d.json, nullable=False, server_default=d.empty_json),
        sa.Column("executed_at", timestamp),
        sa.Column("step_seq", sa.Integer()),
        sa.CheckConstraint(
            _check_in("status", "PENDING", "RUNNING", "COMPLETED", "SKIPPED", "FAILED"),
            name="ck_journey_node_executions_status",
        ),
    )
    op.create_index(
        "uq_journey_node_executions_step",
        "journey_node_executions",
        ["journey_contact_id", "step_seq"],
        unique=True,
    )

    op.create_table(
        "conversations",
        *_record(d),
        _tenant_id(),
        _fk("contact_id", "contacts.id", "CASCADE"),
    )
    op.create_index(
        "uq_conversations_tenant_contact",
        "conversations",
        ["tenant_id", "contact_id"],
        unique=True,
    )

    op.create_table(
        "messages",
        *_record(d),
        _tenant_id(),
        _fk("conversation_id", "conversations.id", "SET NULL", nullable=True),
        _fk("contact_id", "contacts.id", "CASCADE"),
        _fk("journey_node_execution_id", "journey_node_executions.id", "SET NULL", nullable=True),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="QUEUED"),
        sa.Column("sent_at", timestamp),
        sa.Column("error", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint(
            _check_in("direction", "OUTBOUND", "INBOUND"), name="ck_messages_direction"
        ),
        sa.CheckConstraint(
            _check_in("status", "QUEUED", "SENT", "FAILED"), name="ck_messages_status"
        ),
    )
    op.create_index("uq_messages_execution", "messages", ["journey_node_execution_id"], unique=True)
    op.create_index(
        "ix_messages_queued",
        "messages",
        ["updated_at"],
        postgresql_where=sa.text("status = 'QUEUED'"),
        sqlite_where=sa.text("status = 'QUEUED'"),
    )

    op.create_table(
        "call_logs",
        *_record(d),
        _tenant_id(),
        _fk("contact_id", "contacts.id", "CASCADE"),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("duration_seconds", sa.Integer()),
    )

    # Dead letters: no foreign keys, the ids may be malformed, unknown or another tenant's.
    op.create_table(
        "task_failures",
        sa.Column("id", sa.Uuid(), primary_key=True, server_default=d.uuid),
        sa.Column("created_at", timestamp, nullable=False, server_default=d.now),
        sa.Column("task_name", sa.String(128), nullable=False),
        sa.Column("task_id", sa.String(64)),
        sa.Column("tenant_id", sa.String(64)),
        sa.Column("journey_contact_id", sa.String(64)),
        sa.Column("kwargs", d.json, nullable=False, server_default=d.empty_json),
        sa.Column("error", sa.Text(), nullable=False),
    )
    op.create_index("ix_task_failures_created_at", "task_failures", ["created_at"])


def downgrade() -> None:
    # Dropping a table drops its indexes and constraints with it.
    for table in TABLES:
        op.drop_table(table)
