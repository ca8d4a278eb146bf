"""The twelve performance indexes, in snake_case: one definition for migration and check."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IndexSpec:
    name: str
    table: str
    columns: tuple[str, ...]  # SQL terms in order, e.g. "executed_at DESC"
    where: str | None = None

    def create_sql(self, *, concurrently: bool) -> str:
        how = "CONCURRENTLY " if concurrently else ""
        columns = ", ".join(self.columns)
        sql = f"CREATE INDEX {how}IF NOT EXISTS {self.name} ON {self.table} ({columns})"
        return f"{sql} WHERE {self.where}" if self.where else sql

    def drop_sql(self, *, concurrently: bool) -> str:
        how = "CONCURRENTLY " if concurrently else ""
        return f"DROP INDEX {how}IF EXISTS {self.name}"


PERFORMANCE_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(
        "idx_journey_node_executions_node_contact_tenant",
        "journey_node_executions",
        ("node_id", "journey_contact_id", "tenant_id"),
    ),
    IndexSpec(
        "idx_journey_node_executions_executed_at",
        "journey_node_executions",
        ("executed_at DESC",),
        "executed_at IS NOT NULL",
    ),
    IndexSpec(
        "idx_journey_node_executions_contact_tenant_executed",
        "journey_node_executions",
        ("journey_contact_id", "tenant_id", "executed_at DESC"),
    ),
    # The seed names no columns for this partial index; "active contacts at a node of a journey"
    # is the question an operator asks when a node is edited or deleted under live contacts.
    IndexSpec(
        "idx_journey_contacts_active",
        "journey_contacts",
        ("journey_id", "current_node_id"),
        "status = 'ACTIVE'",
    ),
    IndexSpec(
        "idx_journey_contacts_journey_tenant_status",
        "journey_contacts",
        ("journey_id", "tenant_id", "status"),
    ),
    IndexSpec(
        "idx_journey_nodes_journey_id_tenant",
        "journey_nodes",
        ("journey_id", "id", "tenant_id"),
    ),
    IndexSpec("idx_messages_created_at", "messages", ("created_at DESC",)),
    IndexSpec(
        "idx_messages_conversation_created_at",
        "messages",
        ("conversation_id", "created_at DESC"),
    ),
    IndexSpec("idx_call_logs_created_at", "call_logs", ("created_at DESC",)),
    IndexSpec(
        "idx_call_logs_tenant_created_status",
        "call_logs",
        ("tenant_id", "created_at DESC", "status"),
    ),
    IndexSpec("idx_contacts_created_at", "contacts", ("created_at DESC",)),
    IndexSpec("idx_contacts_tenant_created_at", "contacts", ("tenant_id", "created_at DESC")),
)
