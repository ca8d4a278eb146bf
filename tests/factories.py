"""Rows for tests, inserted the way upstream would: plain SQL through the models' tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, insert

from db.models import Contact, Journey, JourneyContact, JourneyNode, Tenant


@dataclass
class JourneyFixture:
    tenant_id: uuid.UUID
    journey_id: uuid.UUID
    nodes: dict[str, uuid.UUID] = field(default_factory=dict)
    contacts: list[uuid.UUID] = field(default_factory=list)


def make_tenant(engine: Engine, *, status: str = "ACTIVE", name: str = "Acme") -> uuid.UUID:
    tenant_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(insert(Tenant).values(id=tenant_id, name=name, status=status, settings={}))
    return tenant_id


def make_contacts(
    engine: Engine, tenant_id: uuid.UUID, count: int, **overrides: Any
) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    rows = [
        {
            "id": cid,
            "tenant_id": tenant_id,
            "phone": overrides.get("phone", f"+1555{i:07d}"),
            "email": overrides.get("email", f"c{i}@example.test"),
            "attributes": overrides.get("attributes", {"first_name": f"Ann{i}", "plan": "pro"}),
            "opted_out_at": overrides.get("opted_out_at"),
        }
        for i, cid in enumerate(ids)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Contact), rows)
    return ids


def make_journey(
    engine: Engine,
    tenant_id: uuid.UUID,
    nodes: list[tuple[str, str, dict[str, Any], str | None]],
    *,
    status: str = "ACTIVE",
) -> JourneyFixture:
    """nodes: (name, type, config, next name). Config values "@name" become that node's id."""
    journey_id = uuid.uuid4()
    ids = {name: uuid.uuid4() for name, *_ in nodes}

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("@"):
            return str(ids[value[1:]])
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    with engine.begin() as conn:
        conn.execute(
            insert(Journey).values(
                id=journey_id,
                tenant_id=tenant_id,
                name="test journey",
                status=status,
                entry_node_id=ids[nodes[0][0]] if nodes else None,
            )
        )
        # Insert without next pointers first: nodes reference each other.
        conn.execute(
            insert(JourneyNode),
            [
                {
                    "id": ids[name],
                    "tenant_id": tenant_id,
                    "journey_id": journey_id,
                    "type": node_type,
                    "config": resolve(config),
                    "next_node_id": None,
                }
                for name, node_type, config, _next in nodes
            ],
        )
        for name, _type, _config, next_name in nodes:
            if next_name:
                conn.execute(
                    JourneyNode.__table__.update()
                    .where(JourneyNode.id == ids[name])
                    .values(next_node_id=ids[next_name])
                )
    return JourneyFixture(tenant_id, journey_id, ids)


def make_journey_contact(
    engine: Engine, fixture: JourneyFixture, contact_id: uuid.UUID, *, entry: str | None = None
) -> uuid.UUID:
    """A journey contact row as upstream creates it: ACTIVE at the entry node, nothing else."""
    jc_id = uuid.uuid4()
    entry_id = fixture.nodes[entry] if entry else next(iter(fixture.nodes.values()))
    with engine.begin() as conn:
        conn.execute(
            insert(JourneyContact).values(
                id=jc_id,
                tenant_id=fixture.tenant_id,
                journey_id=fixture.journey_id,
                contact_id=contact_id,
                status="ACTIVE",
                current_node_id=entry_id,
            )
        )
    return jc_id
