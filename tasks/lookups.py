"""The one way the engine reads journey nodes and tenants: Redis first, PostgreSQL on a miss."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from db import queries

if TYPE_CHECKING:
    from cache import JourneyCache


@dataclass(frozen=True)
class NodeRecord:
    id: str
    journey_id: str
    type: str
    config: Any
    next_node_id: str | None

    def to_cache(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "journey_id": self.journey_id,
            "type": self.type,
            "config": self.config,
            "next_node_id": self.next_node_id,
        }

    @classmethod
    def from_cache(cls, value: dict[str, Any]) -> NodeRecord:
        return cls(**value)


@dataclass(frozen=True)
class TenantRecord:
    id: str
    name: str
    status: str
    settings: dict[str, Any]

    def to_cache(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "status": self.status, "settings": self.settings}

    @classmethod
    def from_cache(cls, value: dict[str, Any]) -> TenantRecord:
        return cls(**value)


def _str_or_none(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


class JourneyReader:
    """Reads through the cache. A miss loads the whole journey's nodes, so the journey's other
    nodes are hits from then on; the fill is refused if an invalidation came in between."""

    def __init__(self, cache: JourneyCache | None) -> None:
        self.cache = cache

    def node_and_tenant(
        self, session: Session, tenant_id: uuid.UUID, journey_id: uuid.UUID, node_id: uuid.UUID
    ) -> tuple[NodeRecord | None, TenantRecord | None]:
        tid, jid, nid = str(tenant_id), str(journey_id), str(node_id)
        read = self.cache.read(tid, jid, nid) if self.cache is not None else None
        node = NodeRecord.from_cache(read.node) if read and read.node else None
        tenant = TenantRecord.from_cache(read.tenant) if read and read.tenant else None
        if node is None:
            nodes = self._load_nodes(session, tenant_id, journey_id)
            node = nodes.get(nid)
            if read is not None and read.available and nodes:
                self.cache.fill_nodes(  # type: ignore[union-attr]
                    tid, jid, {k: v.to_cache() for k, v in nodes.items()}, read.journey_token
                )
        if tenant is None:
            tenant = self._load_tenant(session, tenant_id)
            if read is not None and read.available and tenant is not None:
                self.cache.fill_tenant(tid, tenant.to_cache(), read.tenant_token)  # type: ignore[union-attr]
        return node, tenant

    @staticmethod
    def _load_nodes(
        session: Session, tenant_id: uuid.UUID, journey_id: uuid.UUID
    ) -> dict[str, NodeRecord]:
        return {
            str(row.id): NodeRecord(
                id=str(row.id),
                journey_id=str(row.journey_id),
                type=row.type,
                config=row.config,
                next_node_id=_str_or_none(row.next_node_id),
            )
            for row in queries.journey_nodes(session, tenant_id, journey_id)
        }

    @staticmethod
    def _load_tenant(session: Session, tenant_id: uuid.UUID) -> TenantRecord | None:
        row = queries.tenant_row(session, tenant_id)
        if row is None:
            return None
        return TenantRecord(
            id=str(row.id), name=row.name, status=row.status, settings=row.settings or {}
        )
