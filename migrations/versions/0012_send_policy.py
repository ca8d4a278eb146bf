"""Send policy and live journey edits: counted sends for frequency caps, node redirects.

- `contact_sends`: one row per SMS counted against a contact's cap (the message's id, the
  contact, when). The engine locks the contact, counts its rows in the window and inserts one
  in the same transaction as the message, so 50 journeys sending at once count exactly.
  Transactional sends are not counted; a message the provider refused deletes its row.
- `journey_node_redirects`: the `redirects` map of journeys.journey_updated, {deleted node:
  new node or null}, read when a contact's current node no longer exists.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    # Re-runnable, like every revision here: a rerun after a failure resumes where it stopped.
    if not inspector.has_table("contact_sends"):
        op.create_table(
            "contact_sends",
            sa.Column("message_id", sa.Uuid(), primary_key=True),
            sa.Column("tenant_id", sa.Uuid(), nullable=False),
            sa.Column(
                "contact_id",
                sa.Uuid(),
                sa.ForeignKey("contacts.id", ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("journey_contact_id", sa.Uuid(), nullable=True),
            sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_contact_sends_contact_sent_at"
        " ON contact_sends (contact_id, sent_at)"
    )
    op.execute("CREATE INDEX IF NOT EXISTS ix_contact_sends_sent_at ON contact_sends (sent_at)")
    if not inspector.has_table("journey_node_redirects"):
        op.create_table(
            "journey_node_redirects",
            sa.Column(
                "journey_id",
                sa.Uuid(),
                sa.ForeignKey("journeys.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("from_node_id", sa.Uuid(), primary_key=True),
            sa.Column("tenant_id", sa.Uuid(), nullable=False),
            sa.Column("to_node_id", sa.Uuid(), nullable=True),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.text("CURRENT_TIMESTAMP"),
            ),
        )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS journey_node_redirects")
    op.execute("DROP INDEX IF EXISTS ix_contact_sends_sent_at")
    op.execute("DROP INDEX IF EXISTS ix_contact_sends_contact_sent_at")
    op.execute("DROP TABLE IF EXISTS contact_sends")
