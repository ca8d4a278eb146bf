"""The twelve performance indexes (db/indexes.py), built without blocking writes.

On PostgreSQL each index is built with CREATE INDEX CONCURRENTLY, which cannot run inside a
transaction: hence the autocommit block. A build that fails leaves an INVALID index behind; a
rerun of this revision drops such a leftover and builds it again. Downgrade is the rollback
plan: drop exactly these twelve, concurrently.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from db.indexes import PERFORMANCE_INDEXES
from db.migrate import build_performance_indexes, drop_performance_indexes

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    context = op.get_context()
    postgresql = context.dialect.name == "postgresql"
    if context.as_sql:
        # Offline SQL cannot look for INVALID leftovers; IF NOT EXISTS keeps it rerunnable.
        with context.autocommit_block():
            for spec in PERFORMANCE_INDEXES:
                op.execute(spec.create_sql(concurrently=postgresql))
        return
    if postgresql:
        with context.autocommit_block():
            build_performance_indexes(op.get_bind())
    else:
        build_performance_indexes(op.get_bind())


def downgrade() -> None:
    context = op.get_context()
    postgresql = context.dialect.name == "postgresql"
    if context.as_sql:
        with context.autocommit_block():
            for spec in reversed(PERFORMANCE_INDEXES):
                op.execute(spec.drop_sql(concurrently=postgresql))
        return
    if postgresql:
        with context.autocommit_block():
            drop_performance_indexes(op.get_bind())
    else:
        drop_performance_indexes(op.get_bind())
