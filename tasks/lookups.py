"""The one way the engine reads journey nodes and tenants: Redis first, PostgreSQL on a miss.

The cache stores JSON (strings); these records carry UUIDs, converted once at this edge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from db import lookups

if TYPE_CHECKING:
    from cache import JourneyCache


def _uuid_or_none(value: str | uuid.UUID | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))


def _str_or_none(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class NodeRecord:
    id: uuid.UUID
    journey_id: uuid.UUID
    type: str
    config: Any
    next_node_id: uuid.UUID | None

    def to_cache(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "journey_id": str(self.journey_id),
            "type": self.type,
            "config": self.config,
            "next_node_id": _str_or_none(self.next_node_id),
        }

    @classmethod
    def from_cache(cls, value: dict[str, Any]) -> NodeRecord:
        return cls(
            id=uuid.UUID(value["id"]),
            journey_id=uuid.UUID(value["journey_id"]),
            type=value["type"],
            config=value["config"],
            next_node_id=_uuid_or_none(value["next_node_id"]),
        )


@dataclass(frozen=True)
class TenantRecord:
    id: uuid.UUID
    name: str
    status: str
    settings: dict[str, Any]

    def to_cache(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "status": self.status,
            "settings": self.settings,
        }

    @classmethod
    def from_cache(cls, value: dict[str, Any]) -> TenantRecord:
        return cls(
            id=uuid.UUID(value["id"]),
            name=value["name"],
            status=value["status"],
            settings=value["settings"],
        )


class JourneyReader:
    """Reads through the cache. A miss loads the whole journey's nodes, so the journey's other
    nodes are hits from then on; the fill is refused if an invalidation came in between."""

    def __init__(self, cache: JourneyCache | None) -> None:
        self.cache = cache

    def node_and_tenant(
        self,
        connection: Connection,
        tenant_id: uuid.UUID,
        journey_id: uuid.UUID,
        node_id: uuid.UUID,
    ) -> tuple[NodeRecord | None, TenantRecord | None]:
        tid, jid, nid = str(tenant_id), str(journey_id), str(node_id)
        read = self.cache.read(tid, jid, nid) if self.cache is not None else None
        node = NodeRecord.from_cache(read.node) if read and read.node else None
        tenant = TenantRecord.from_cache(read.tenant) if read and read.tenant else None
        if node is None:
            nodes = self.load_nodes(connection, tenant_id, journey_id)
            node = nodes.get(node_id)
            if read is not None and read.available and nodes:
                self.cache.fill_nodes(  # type: ignore[union-attr]
                    tid, jid, {str(k): v.to_cache() for k, v in nodes.items()}, read.journey_token
                )
        if tenant is None:
            tenant = self._load_tenant(connection, tenant_id)
            if read is not None and read.available and tenant is not None:
                self.cache.fill_tenant(tid, tenant.to_cache(), read.tenant_token)  # type: ignore[union-attr]
        return node, tenant

    def tenant(self, connection: Connection, tenant_id: uuid.UUID) -> TenantRecord | None:
        """The tenant alone (its settings), through the cache like node_and_tenant."""
        read = self.cache.read_tenant(str(tenant_id)) if self.cache is not None else None
        if read is not None and read.tenant:
            return TenantRecord.from_cache(read.tenant)
        tenant = self._load_tenant(connection, tenant_id)
        if read is not None and read.available and tenant is not None:
            self.cache.fill_tenant(str(tenant_id), tenant.to_cache(), read.tenant_token)  # type: ignore[union-attr]
        return tenant

    @staticmethod
    def load_nodes(
        connection: Connection, tenant_id: uuid.UUID, journey_id: uuid.UUID
    ) -> dict[uuid.UUID, NodeRecord]:
        return {
            row.id: NodeRecord(
                id=row.id,
                journey_id=row.journey_id,
                type=row.type,
                config=row.config,
                next_node_id=row.next_node_id,
            )
            for row in lookups.journey_nodes(connection, tenant_id, journey_id)
        }

    @staticmethod
    def _load_tenant(connection: Connection, tenant_id: uuid.UUID) -> TenantRecord | None:
        row = lookups.tenant_row(connection, tenant_id)
        if row is None:
            return None
        return TenantRecord(
            id=row.id, name=row.name, status=row.status, settings=row.settings or {}
        )
