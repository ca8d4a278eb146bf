"""NOTIFY on changes to tenants, journeys and journey nodes, so worker caches drop stale entries.

Whoever writes the row (upstream, an operator in psql, the worker), PostgreSQL itself sends
pg_notify on channel db.migrate.INVALIDATION_CHANNEL, and delivers it only when the writing
transaction commits (never for a rollback). Payload: {"kind": "tenant" | "journey",
"tenant_id": ..., "journey_id": ... or null}; a node change is a "journey" change of its journey.

Row-level triggers: these are configuration tables, written a few rows at a time, and
PostgreSQL collapses identical notifications of one transaction into one, so a journey saved
with fifty nodes still notifies once. An UPDATE notifies for the old and the new row, so a
row moved to another journey or tenant invalidates both. PostgreSQL only; a no-op on SQLite,
where the embedded default runs everything in one process.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from db.migrate import INVALIDATION_CHANNEL

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "journey_worker_notify_invalidation"
TRIGGER = "journey_worker_invalidate"
TABLES = ("tenants", "journeys", "journey_nodes")


def _notify(kind: str, tenant_id: str, journey_id: str) -> str:
    payload = (
        f"json_build_object('kind', '{kind}', 'tenant_id', {tenant_id}, "
        f"'journey_id', {journey_id})::text"
    )
    return f"PERFORM pg_notify('{INVALIDATION_CHANNEL}', {payload});"


def _for(row: str) -> str:
    """The notification for OLD or NEW of whichever table fired the trigger."""
    return f"""
        IF TG_TABLE_NAME = 'tenants' THEN
            {_notify("tenant", f"{row}.id", "NULL::uuid")}
        ELSIF TG_TABLE_NAME = 'journeys' THEN
            {_notify("journey", f"{row}.tenant_id", f"{row}.id")}
        ELSE
            {_notify("journey", f"{row}.tenant_id", f"{row}.journey_id")}
        END IF;"""


FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    -- OLD exists for UPDATE and DELETE, NEW for INSERT and UPDATE.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN{_for("OLD")}
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN{_for("NEW")}
    END IF;
    RETURN NULL;  -- AFTER trigger: the return value is ignored
END;
$body$
"""


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(FUNCTION_SQL)
    for table in TABLES:
        # DROP IF EXISTS first keeps the revision rerunnable (CREATE OR REPLACE TRIGGER is 14+).
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table}")
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()"
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table}")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
