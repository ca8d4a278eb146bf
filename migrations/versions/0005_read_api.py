"""The read-only HTTP API: keyset pagination indexes and the per-node daily funnel.

Indexes (built CONCURRENTLY on PostgreSQL, as 0002 and 0004 do; a failed build's INVALID leftover
is dropped and rebuilt on rerun), one per page the API serves, each ending in (created_at, id) so
that a page is one index range scan from the cursor on, however deep it is:

* journeys of a tenant:                      (tenant_id, created_at, id)
* journey contacts of a journey:             (journey_id, created_at, id)
* ... filtered by status:                    (journey_id, status, created_at, id)
* executions (and, through them, messages)
  of a journey contact, newest first:        (journey_contact_id, created_at, id), read backwards

`stats_refreshes` records when each statistics view was last refreshed (both dialects).

`journey_node_daily_stats` (PostgreSQL only) is the funnel per tenant, journey, node and UTC day:
`reached` counts journey contacts that reached the node for the first time that day (so its sum
over days is the number of contacts that ever reached it), `executions` and `messages` are JSON
objects of counts by status (new statuses need no migration). Created WITH NO DATA: populating it
would scan the execution log under the migration lock; the refresh task populates it (the first
refresh cannot be CONCURRENTLY). The unique index is what REFRESH ... CONCURRENTLY requires.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_journeys_tenant_created", "journeys", "tenant_id, created_at, id"),
    ("ix_journey_contacts_journey_created", "journey_contacts", "journey_id, created_at, id"),
    (
        "ix_journey_contacts_journey_status_created",
        "journey_contacts",
        "journey_id, status, created_at, id",
    ),
    (
        "ix_journey_node_executions_contact_created",
        "journey_node_executions",
        "journey_contact_id, created_at, id",
    ),
)

VIEW = "journey_node_daily_stats"
VIEW_UNIQUE_INDEX = "uq_journey_node_daily_stats"

# Frozen here on purpose: a later change to the view is a new revision.
VIEW_SQL = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS {VIEW} AS
WITH steps AS (
    SELECT jc.tenant_id, jc.journey_id, e.node_id, e.journey_contact_id,
           e.id AS execution_id, e.status, (e.created_at AT TIME ZONE 'UTC')::date AS day
    FROM journey_node_executions e
    JOIN journey_contacts jc ON jc.id = e.journey_contact_id
    WHERE e.node_id IS NOT NULL
),
first_reach AS (
    SELECT tenant_id, journey_id, node_id, first_day AS day, count(*) AS reached
    FROM (SELECT tenant_id, journey_id, node_id, journey_contact_id, min(day) AS first_day
          FROM steps GROUP BY tenant_id, journey_id, node_id, journey_contact_id) AS firsts
    GROUP BY tenant_id, journey_id, node_id, first_day
),
execution_counts AS (
    SELECT tenant_id, journey_id, node_id, day, jsonb_object_agg(status, n) AS executions
    FROM (SELECT tenant_id, journey_id, node_id, day, status, count(*) AS n
          FROM steps GROUP BY tenant_id, journey_id, node_id, day, status) AS by_status
    GROUP BY tenant_id, journey_id, node_id, day
),
message_counts AS (
    SELECT tenant_id, journey_id, node_id, day, jsonb_object_agg(status, n) AS messages
    FROM (SELECT s.tenant_id, s.journey_id, s.node_id, s.day, m.status, count(*) AS n
          FROM steps s JOIN messages m ON m.journey_node_execution_id = s.execution_id
          GROUP BY s.tenant_id, s.journey_id, s.node_id, s.day, m.status) AS by_status
    GROUP BY tenant_id, journey_id, node_id, day
)
SELECT e.tenant_id, e.journey_id, e.node_id, e.day,
       coalesce(r.reached, 0)::bigint AS reached,
       e.executions,
       coalesce(m.messages, '{{}}'::jsonb) AS messages
FROM execution_counts e
LEFT JOIN first_reach r USING (tenant_id, journey_id, node_id, day)
LEFT JOIN message_counts m USING (tenant_id, journey_id, node_id, day)
WITH NO DATA
"""


def _create_stats_refreshes() -> None:
    op.create_table(
        "stats_refreshes",
        sa.Column("view_name", sa.String(64), primary_key=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
    )


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    # Every step is rerunnable, like 0002-0004's: a rerun (after a failed concurrent build, or
    # a database stamped back) skips what exists and builds what is missing.
    if not sa.inspect(bind).has_table("stats_refreshes"):
        _create_stats_refreshes()
    if postgres:
        op.execute(VIEW_SQL)
        op.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {VIEW_UNIQUE_INDEX} "
            f"ON {VIEW} (tenant_id, journey_id, node_id, day)"
        )
    how = "CONCURRENTLY " if postgres else ""
    with op.get_context().autocommit_block():
        for name, table, columns in INDEXES:
            if postgres:
                # A failed concurrent build leaves an INVALID index behind: rebuild it.
                op.execute(
                    f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c "
                    f"ON c.oid = i.indexrelid WHERE c.relname = '{name}' AND NOT i.indisvalid) "
                    f"THEN EXECUTE 'DROP INDEX {name}'; END IF; END $$"
                )
            op.execute(f"CREATE INDEX {how}IF NOT EXISTS {name} ON {table} ({columns})")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    how = "CONCURRENTLY " if postgres else ""
    with op.get_context().autocommit_block():
        for name, *_ in INDEXES:
            op.execute(f"DROP INDEX {how}IF EXISTS {name}")
    if postgres:
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {VIEW}")
    op.drop_table("stats_refreshes")
