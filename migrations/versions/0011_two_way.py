"""Two-way SMS (issue 12): inbound messages, delivery receipts, contact events, consent audit.

- `messages.contact_id` becomes nullable: an inbound message from a phone the tenant does not
  know is kept without a contact (contract Version 2).
- `messages.from_phone`, `messages.to_phone`: an inbound message's phones, so one from an
  unknown phone still says who wrote.
- `messages.status` adds DELIVERED and UNDELIVERED; `messages.error_code` holds the provider's
  code from a receipt. On PostgreSQL the new CHECK is added NOT VALID and then validated, so
  the table is not locked against writes while existing rows are checked.
- `early_delivery_receipts`: a receipt that came before its message's provider id was
  visible, applied when the id is stored (db/receipts.py).
- `contact_events`: what wait_for_event nodes wait for; `event_id` unique per tenant.
- `contact_consent_changes`: the audit trail of opt-outs and opt-ins with their source message.
- `ix_contacts_tenant_phone`: an inbound SMS finds its contact by tenant and phone.
- `ix_journey_contacts_waiting_contact`: (contact_id) over WAITING rows only: an event finds
  the contact's waits in one index range.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = ("QUEUED", "SENT", "FAILED")
NEW_STATUSES = (*OLD_STATUSES, "DELIVERED", "UNDELIVERED")
MESSAGE_COLUMNS = {"error_code": sa.Text(), "from_phone": sa.String(32), "to_phone": sa.String(32)}
INDEXES = (
    ("ix_contacts_tenant_phone", "contacts", "tenant_id, phone", None),
    ("ix_journey_contacts_waiting_contact", "journey_contacts", "contact_id", "status = 'WAITING'"),
)


def _status_check(statuses: Sequence[str]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def _uuid_default(postgres: bool) -> sa.TextClause:
    return sa.text("gen_random_uuid()" if postgres else "(lower(hex(randomblob(16))))")


def _tenant_and_contact() -> list[sa.Column]:
    """A row of a tenant's contact: deleted with the contact, never with a tenant in use."""
    return [
        sa.Column(
            "tenant_id",
            sa.Uuid(),
            sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column(
            "contact_id",
            sa.Uuid(),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
    ]


def _timestamps() -> list[sa.Column]:
    now = sa.text("CURRENT_TIMESTAMP")
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
    ]


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def _set_messages_schema(postgres: bool, statuses: Sequence[str], contact_nullable: bool) -> None:
    if postgres:
        op.alter_column("messages", "contact_id", nullable=contact_nullable)
        op.execute("ALTER TABLE messages DROP CONSTRAINT IF EXISTS ck_messages_status")
        op.execute(
            "ALTER TABLE messages ADD CONSTRAINT ck_messages_status "
            f"CHECK ({_status_check(statuses)}) NOT VALID"
        )
        op.execute("ALTER TABLE messages VALIDATE CONSTRAINT ck_messages_status")
        return
    # SQLite changes a column or a CHECK by copying the table; nothing references messages
    # with ON DELETE CASCADE, so the copy deletes nothing else.
    with op.batch_alter_table("messages", recreate="always") as batch:
        batch.alter_column("contact_id", existing_type=sa.Uuid(), nullable=contact_nullable)
        batch.drop_constraint("ck_messages_status", type_="check")
        batch.create_check_constraint("ck_messages_status", _status_check(statuses))


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    inspector = sa.inspect(bind)
    # Re-runnable, like every revision here: a rerun after a failure resumes where it stopped.
    present = {c["name"] for c in inspector.get_columns("messages")}
    for name, kind in MESSAGE_COLUMNS.items():
        if name not in present:
            op.add_column("messages", sa.Column(name, kind, nullable=True))
    _set_messages_schema(postgres, NEW_STATUSES, contact_nullable=True)
    if not inspector.has_table("early_delivery_receipts"):
        op.create_table(
            "early_delivery_receipts",
            sa.Column(
                "tenant_id",
                sa.Uuid(),
                sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                primary_key=True,
            ),
            sa.Column("provider_message_id", sa.Text(), primary_key=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("error_code", sa.Text(), nullable=True),
            sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.text("CURRENT_TIMESTAMP"),
            ),
        )
    if not inspector.has_table("contact_events"):
        op.create_table(
            "contact_events",
            sa.Column("id", sa.Uuid(), primary_key=True, server_default=_uuid_default(postgres)),
            *_timestamps(),
            *_tenant_and_contact(),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("properties", _json(), nullable=False, server_default=sa.text("'{}'")),
            sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("event_id", sa.String(255), nullable=True),
        )
        op.create_index(
            "uq_contact_events_event_id",
            "contact_events",
            ["tenant_id", "event_id"],
            unique=True,
            postgresql_where=sa.text("event_id IS NOT NULL"),
            sqlite_where=sa.text("event_id IS NOT NULL"),
        )
        op.create_index(
            "ix_contact_events_contact_name",
            "contact_events",
            ["contact_id", "name", "occurred_at"],
        )
    if not inspector.has_table("contact_consent_changes"):
        op.create_table(
            "contact_consent_changes",
            sa.Column("id", sa.Uuid(), primary_key=True, server_default=_uuid_default(postgres)),
            *_timestamps(),
            *_tenant_and_contact(),
            sa.Column("action", sa.String(16), nullable=False),
            sa.Column(
                "message_id",
                sa.Uuid(),
                sa.ForeignKey("messages.id", ondelete="SET NULL"),
                nullable=True,
            ),
            sa.Column("keyword", sa.Text(), nullable=False),
            sa.CheckConstraint("action IN ('OPT_OUT', 'OPT_IN')", name="ck_contact_consent_action"),
        )
        op.create_index(
            "ix_contact_consent_changes_contact",
            "contact_consent_changes",
            ["contact_id", "created_at"],
        )
    how = "CONCURRENTLY " if postgres else ""
    with op.get_context().autocommit_block():
        for name, table, columns, where in INDEXES:
            if postgres:
                # A failed concurrent build leaves an INVALID index behind: rebuild it.
                op.execute(
                    f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c "
                    f"ON c.oid = i.indexrelid WHERE c.relname = '{name}' AND NOT i.indisvalid) "
                    f"THEN EXECUTE 'DROP INDEX {name}'; END IF; END $$"
                )
            clause = f" WHERE {where}" if where else ""
            op.execute(f"CREATE INDEX {how}IF NOT EXISTS {name} ON {table} ({columns}){clause}")


def downgrade() -> None:
    """Inbound messages without a contact, and receipts' statuses, do not fit the old schema:
    the former are deleted, DELIVERED and UNDELIVERED become SENT and FAILED."""
    postgres = op.get_bind().dialect.name == "postgresql"
    how = "CONCURRENTLY " if postgres else ""
    with op.get_context().autocommit_block():
        for name, *_ in INDEXES:
            op.execute(f"DROP INDEX {how}IF EXISTS {name}")
    op.drop_table("contact_consent_changes")
    op.drop_table("contact_events")
    op.drop_table("early_delivery_receipts")
    op.execute("DELETE FROM messages WHERE contact_id IS NULL")
    op.execute("UPDATE messages SET status = 'SENT' WHERE status = 'DELIVERED'")
    op.execute("UPDATE messages SET status = 'FAILED' WHERE status = 'UNDELIVERED'")
    _set_messages_schema(postgres, OLD_STATUSES, contact_nullable=False)
    for name in reversed(MESSAGE_COLUMNS):
        op.execute(f"ALTER TABLE messages DROP COLUMN {name}")
