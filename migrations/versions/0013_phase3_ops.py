"""Phase 3 operations: resumable contact imports and per-table autovacuum settings.

- `contact_imports`: one row per `journey-worker contacts import` of a CSV file; `applied_rows`
  advances in the transaction of each chunk it applies, so a crashed import resumes after its
  last committed chunk (worker/contact_import.py).
- Autovacuum per table (PostgreSQL only; docs/operations.md, "Vacuum and analyze", says why):
  the three tables that grow or churn by millions of rows a day get vacuumed and analyzed after
  a fixed slice of their rows changed rather than a fifth of them, and vacuum there runs
  without the cost delay's default sleep so it keeps up with the churn.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Storage parameters per table. scale_factor 0.2 (the default) on a 200-million-row execution
# log lets 40 million dead rows pile up before a vacuum: a small factor plus a threshold makes
# autovacuum visit every few hundred thousand changes instead, each visit short.
AUTOVACUUM: dict[str, dict[str, str]] = {
    # Insert-mostly, deleted in bulk by retention: analyze often (the planner's view of
    # executed_at ranges), vacuum after each purge's slice, and on inserts (PG 13+) so the
    # visibility map stays current for index-only scans.
    "journey_node_executions": {
        "autovacuum_vacuum_scale_factor": "0.01",
        "autovacuum_vacuum_threshold": "10000",
        "autovacuum_vacuum_insert_scale_factor": "0.05",
        "autovacuum_analyze_scale_factor": "0.02",
        "autovacuum_vacuum_cost_delay": "1",
    },
    # Updated at every step (step_seq, status, due_at): the hottest churn. Leave room on each
    # page so those updates stay HOT (no index writes) and vacuum often.
    "journey_contacts": {
        "autovacuum_vacuum_scale_factor": "0.02",
        "autovacuum_vacuum_threshold": "5000",
        "autovacuum_analyze_scale_factor": "0.02",
        "autovacuum_vacuum_cost_delay": "1",
        "fillfactor": "85",
    },
    # Inserted QUEUED, updated once or twice by delivery.
    "messages": {
        "autovacuum_vacuum_scale_factor": "0.02",
        "autovacuum_vacuum_threshold": "5000",
        "autovacuum_analyze_scale_factor": "0.02",
        "autovacuum_vacuum_cost_delay": "1",
    },
}


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    # Re-runnable, like every revision here.
    if not inspector.has_table("contact_imports"):
        timestamp = sa.DateTime(timezone=True)
        uuid_default = (
            sa.text("gen_random_uuid()")
            if bind.dialect.name == "postgresql"
            else sa.text("(lower(hex(randomblob(16))))")
        )
        op.create_table(
            "contact_imports",
            sa.Column("id", sa.Uuid(), primary_key=True, server_default=uuid_default),
            sa.Column(
                "tenant_id",
                sa.Uuid(),
                sa.ForeignKey("tenants.id", ondelete="RESTRICT"),
                nullable=False,
            ),
            sa.Column("source", sa.Text(), nullable=False),
            sa.Column("source_sha256", sa.String(64), nullable=False),
            sa.Column("status", sa.String(16), nullable=False, server_default="RUNNING"),
            sa.Column("total_rows", sa.BigInteger()),
            sa.Column("applied_rows", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
            sa.Column(
                "updated_contacts", sa.BigInteger(), nullable=False, server_default=sa.text("0")
            ),
            sa.Column(
                "skipped_contacts", sa.BigInteger(), nullable=False, server_default=sa.text("0")
            ),
            sa.Column(
                "created_at",
                timestamp,
                nullable=False,
                server_default=sa.text("CURRENT_TIMESTAMP"),
            ),
            sa.Column(
                "updated_at",
                timestamp,
                nullable=False,
                server_default=sa.text("CURRENT_TIMESTAMP"),
            ),
            sa.Column("finished_at", timestamp),
            sa.CheckConstraint(
                "status IN ('RUNNING', 'COMPLETED')", name="ck_contact_imports_status"
            ),
        )
    op.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_contact_imports_running "
        "ON contact_imports (tenant_id, source_sha256) WHERE status = 'RUNNING'"
    )
    if bind.dialect.name == "postgresql":
        for table, parameters in AUTOVACUUM.items():
            options = ", ".join(f"{key} = {value}" for key, value in parameters.items())
            # Catalog-only: no rewrite; existing pages keep their fill until rewritten.
            op.execute(f"ALTER TABLE {table} SET ({options})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, parameters in AUTOVACUUM.items():
            op.execute(f"ALTER TABLE {table} RESET ({', '.join(parameters)})")
    op.execute("DROP INDEX IF EXISTS uq_contact_imports_running")
    op.execute("DROP TABLE IF EXISTS contact_imports")
