"""What the dispatcher needs to re-publish only what is lost, fairly, and to pace deliveries.

- `journey_contacts.unpublished`: the step's message is known not to be in any queue (its
  publish failed, or a held contact was released): the dispatcher publishes it at once,
  without waiting for a grace period or for the queues to be quiet.
- `ix_journey_contacts_tenant_due`: (tenant_id, due_at) over the rows the dispatcher publishes
  whatever the backlog (due waits and unpublished steps), so each run takes the oldest due rows
  of every tenant through one index range each, instead of everyone's oldest first.
- `dispatch_lanes`: the depth of each step queue the dispatcher last saw, and when it last saw
  one non-empty: a late step counts as lost only when the queues have been quiet for a while.
- `messages.deliver_after`: a message its tenant's send rate deferred; the dispatcher publishes
  its delivery once that time has come.

Revision ID: 0010
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    (
        "ix_journey_contacts_tenant_due",
        "journey_contacts",
        "tenant_id, due_at",
        "status = 'WAITING' OR (status = 'ACTIVE' AND unpublished)",
    ),
    (
        "ix_messages_deliver_after",
        "messages",
        "deliver_after",
        "status = 'QUEUED' AND deliver_after IS NOT NULL",
    ),
)


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    inspector = sa.inspect(bind)
    # Re-runnable, like every revision here: a rerun after a failure resumes where it stopped.
    if "unpublished" not in {c["name"] for c in inspector.get_columns("journey_contacts")}:
        # A constant default: PostgreSQL adds the column without rewriting the table.
        op.add_column(
            "journey_contacts",
            sa.Column("unpublished", sa.Boolean(), nullable=False, server_default=sa.false()),
        )
    if "deliver_after" not in {c["name"] for c in inspector.get_columns("messages")}:
        op.add_column("messages", sa.Column("deliver_after", sa.DateTime(timezone=True)))
    if not inspector.has_table("dispatch_lanes"):
        op.create_table(
            "dispatch_lanes",
            sa.Column("lane", sa.String(128), primary_key=True),
            sa.Column("depth", sa.Integer(), nullable=True),
            sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("busy_at", sa.DateTime(timezone=True), nullable=True),
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
            op.execute(
                f"CREATE INDEX {how}IF NOT EXISTS {name} ON {table} ({columns}) WHERE {where}"
            )


def downgrade() -> None:
    how = "CONCURRENTLY " if op.get_bind().dialect.name == "postgresql" else ""
    with op.get_context().autocommit_block():
        for name, *_ in INDEXES:
            op.execute(f"DROP INDEX {how}IF EXISTS {name}")
    op.drop_table("dispatch_lanes")
    # ALTER TABLE ... DROP COLUMN on both databases (SQLite 3.35+): a batch-mode table copy on
    # SQLite would drop journey_contacts, and its cascade would delete every execution.
    op.execute("ALTER TABLE messages DROP COLUMN deliver_after")
    op.execute("ALTER TABLE journey_contacts DROP COLUMN unpublished")
