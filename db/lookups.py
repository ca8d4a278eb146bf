"""What the journey cache fills from: a journey's nodes and a tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, select
from sqlalchemy.orm import Session

from db.models import JourneyNode, Tenant


def journey_nodes(
    bind: Session | Connection, tenant_id: uuid.UUID, journey_id: uuid.UUID
) -> Sequence[Row[Any]]:
    stmt = select(
        JourneyNode.id,
        JourneyNode.journey_id,
        JourneyNode.type,
        JourneyNode.config,
        JourneyNode.next_node_id,
    ).where(JourneyNode.journey_id == journey_id, JourneyNode.tenant_id == tenant_id)
    return bind.execute(stmt).all()


def tenant_row(bind: Session | Connection, tenant_id: uuid.UUID) -> Row[Any] | None:
    stmt = select(Tenant.id, Tenant.name, Tenant.status, Tenant.settings).where(
        Tenant.id == tenant_id
    )
    return bind.execute(stmt).one_or_none()
