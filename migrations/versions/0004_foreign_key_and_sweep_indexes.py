"""Indexes for foreign keys that had none, and for the dispatcher's sweep of undated rows.

Deleting a contact cascades into messages, call_logs and conversations; without an index on
contact_id each delete scans those tables. Journey contacts that upstream inserted carry no
due_at; the dispatcher sweeps them (when their first message was lost) through a small partial
index instead of a scan. Built CONCURRENTLY on PostgreSQL, like the performance indexes of 0002.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_messages_contact_id", "messages", "contact_id", None),
    ("ix_call_logs_contact_id", "call_logs", "contact_id", None),
    ("ix_conversations_contact_id", "conversations", "contact_id", None),
    (
        "ix_journey_contacts_undated",
        "journey_contacts",
        "created_at",
        "status = 'ACTIVE' AND due_at IS NULL",
    ),
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    how = "CONCURRENTLY " if postgres else ""
    with op.get_context().autocommit_block():
        for name, table, column, where in INDEXES:
            if postgres:
                # A failed concurrent build leaves an INVALID index behind: rebuild it.
                op.execute(
                    f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c "
                    f"ON c.oid = i.indexrelid WHERE c.relname = '{name}' AND NOT i.indisvalid) "
                    f"THEN EXECUTE 'DROP INDEX {name}'; END IF; END $$"
                )
            predicate = f" WHERE {where}" if where else ""
            op.execute(f"CREATE INDEX {how}IF NOT EXISTS {name} ON {table} ({column}){predicate}")


def downgrade() -> None:
    how = "CONCURRENTLY " if op.get_bind().dialect.name == "postgresql" else ""
    with op.get_context().autocommit_block():
        for name, *_ in INDEXES:
            op.execute(f"DROP INDEX {how}IF EXISTS {name}")
