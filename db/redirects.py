"""Node redirects of live journey edits: upstream's `redirects` map of journeys.journey_updated,
{deleted node: new node or null}, kept per journey and read when a contact's node is gone."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db.models import JourneyNodeRedirect


def journey_redirects(
    bind: Session | Connection, tenant_id: uuid.UUID, journey_id: uuid.UUID
) -> dict[uuid.UUID, uuid.UUID | None]:
    rows = bind.execute(
        select(JourneyNodeRedirect.from_node_id, JourneyNodeRedirect.to_node_id).where(
            JourneyNodeRedirect.journey_id == journey_id,
            JourneyNodeRedirect.tenant_id == tenant_id,
        )
    )
    return {from_node: to_node for from_node, to_node in rows}


def save_redirects(
    bind: Session | Connection,
    tenant_id: uuid.UUID,
    journey_id: uuid.UUID,
    redirects: Mapping[uuid.UUID, uuid.UUID | None],
) -> int:
    """Add or replace the journey's redirects (the latest edit's word on a node wins)."""
    if not redirects:
        return 0
    rows = [
        {"journey_id": journey_id, "from_node_id": old, "tenant_id": tenant_id, "to_node_id": new}
        for old, new in redirects.items()
    ]
    dialect = bind.get_bind().dialect.name if isinstance(bind, Session) else bind.dialect.name
    dialect_insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = dialect_insert(JourneyNodeRedirect).values(rows)
    bind.execute(
        statement.on_conflict_do_update(
            index_elements=["journey_id", "from_node_id"],
            set_={"to_node_id": statement.excluded.to_node_id},
        )
    )
    return len(rows)
