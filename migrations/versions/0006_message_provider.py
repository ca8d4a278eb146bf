"""Which SMS provider a message went to, and the provider's id for it.

`messages.provider` names the provider a message was handed to (while the message is QUEUED:
the one it is committed to, because an earlier attempt there may have been accepted; see
tasks/delivery.py). `messages.provider_message_id` is the id the provider gave the message
(upstream contract, Version 2): unique per tenant where not null, so a delivery receipt finds
exactly one message. Both columns are nullable without a default, which PostgreSQL adds
without rewriting the table; the unique index is built CONCURRENTLY, like the others.

`messages.delivery_lease_until` is a delivery's claim on the message: a conditional UPDATE
takes it, so two workers holding the same delivery never send one message twice, and a
worker killed mid-call leaves a lease that expires (no session state: PgBouncer-safe).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_messages_provider_message_id"
COLUMNS = {
    "provider": sa.Text(),
    "provider_message_id": sa.Text(),
    "delivery_lease_until": sa.DateTime(timezone=True),
}


def upgrade() -> None:
    # Re-runnable, like every revision here: a rerun after a failure resumes where it stopped.
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("messages")}
    for name, kind in COLUMNS.items():
        if name not in present:
            op.add_column("messages", sa.Column(name, kind, nullable=True))
    postgres = op.get_bind().dialect.name == "postgresql"
    how = "CONCURRENTLY " if postgres else ""
    with op.get_context().autocommit_block():
        if postgres:
            # A failed concurrent build leaves an INVALID index behind: rebuild it.
            op.execute(
                f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c "
                f"ON c.oid = i.indexrelid WHERE c.relname = '{INDEX}' AND NOT i.indisvalid) "
                f"THEN EXECUTE 'DROP INDEX {INDEX}'; END IF; END $$"
            )
        op.execute(
            f"CREATE UNIQUE INDEX {how}IF NOT EXISTS {INDEX} "
            "ON messages (tenant_id, provider_message_id) WHERE provider_message_id IS NOT NULL"
        )


def downgrade() -> None:
    how = "CONCURRENTLY " if op.get_bind().dialect.name == "postgresql" else ""
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX {how}IF EXISTS {INDEX}")
    with op.batch_alter_table("messages") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
