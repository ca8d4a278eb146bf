"""The step store on PostgreSQL: one read and one write statement per batch, in autocommit.

The read takes the batch's ids as one array (`= ANY`), the write takes one array per column
(`unnest`), so a batch of one and a batch of a thousand run the same two statements, built once.

The write is one statement, so it is its own transaction. It locks the batch's journey contacts
in id order (two workers holding overlapping batches then queue instead of deadlocking), claims
each step with a conditional UPDATE (`step_seq = :step` and still ACTIVE or WAITING: PostgreSQL
re-checks the condition against a row another worker changed meanwhile), and its data-modifying
CTEs insert executions and messages and merge attributes only FROM the claim's rows. A journey
contact whose claim did not hold writes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from db.clock import as_utc
from db.statuses import ContactStatus, MessageDirection, MessageStatus
from db.step_store import (
    RECENT_EXECUTIONS_LIMIT,
    LoadedStep,
    RecentExecution,
    StepState,
    StepStore,
    StepWrite,
)

CLAIMABLE_SQL = f"('{ContactStatus.ACTIVE.value}', '{ContactStatus.WAITING.value}')"

LOAD_SQL = text(f"""
SELECT jc.id, jc.tenant_id, jc.journey_id, jc.contact_id, jc.status, jc.current_node_id,
       jc.step_seq, jc.due_at, j.status AS journey_status, t.status AS tenant_status,
       c.phone, c.email, c.attributes, c.opted_out_at, now() AS db_now,
       ARRAY(
           SELECT g.executed_at FROM journey_node_executions g
           WHERE g.node_id = jc.current_node_id AND g.journey_contact_id = jc.id
             AND g.tenant_id = jc.tenant_id AND g.executed_at IS NOT NULL
           ORDER BY g.executed_at DESC LIMIT :loop_limit
       ) AS loop_times,
       COALESCE((
           SELECT json_agg(
                      json_build_array(r.id, r.node_id, r.node_type, r.status, r.step_seq,
                                       r.executed_at, r.created_at)
                      ORDER BY r.created_at DESC, r.executed_at DESC)
           FROM (
               SELECT e.id, e.node_id, n.type AS node_type, e.status, e.step_seq,
                      e.executed_at, e.created_at
               FROM journey_node_executions e LEFT JOIN journey_nodes n ON n.id = e.node_id
               WHERE e.journey_contact_id = jc.id AND e.tenant_id = jc.tenant_id
               ORDER BY e.created_at DESC, e.executed_at DESC
               LIMIT {RECENT_EXECUTIONS_LIMIT}
           ) r
       ), CAST('[]' AS json)) AS recent
FROM journey_contacts jc
JOIN journeys j ON j.id = jc.journey_id
JOIN tenants t ON t.id = jc.tenant_id
JOIN contacts c ON c.id = jc.contact_id
WHERE jc.id = ANY(CAST(:journey_contact_ids AS uuid[])) AND jc.tenant_id = :tenant_id
""")

# One array per column of StepWrite; unnest zips them back into rows.
WRITE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("journey_contact_id", "uuid"),
    ("step", "integer"),
    ("status", "text"),
    ("current_node_id", "uuid"),
    ("next_step", "integer"),
    ("due_at", "timestamptz"),
    ("due_in", "double precision"),
    ("reason", "text"),
    ("completed", "boolean"),
    ("contact_id", "uuid"),
    ("execution_id", "uuid"),
    ("execution_existing", "boolean"),
    ("execution_node_id", "uuid"),
    ("execution_status", "text"),
    ("execution_error", "text"),
    ("execution_result", "text"),
    ("message_id", "uuid"),
    ("message_body", "text"),
    ("attribute_updates", "text"),
)

_unnest = ",\n        ".join(f"CAST(:{name} AS {kind}[])" for name, kind in WRITE_COLUMNS)
_columns = ", ".join(name for name, _kind in WRITE_COLUMNS)

WRITE_SQL = text(f"""
WITH input AS (
    SELECT * FROM unnest(
        {_unnest}
    ) AS i({_columns})
),
locked AS MATERIALIZED (
    SELECT jc.id FROM journey_contacts jc JOIN input i ON i.journey_contact_id = jc.id
    WHERE jc.tenant_id = :tenant_id AND jc.step_seq = i.step AND jc.status IN {CLAIMABLE_SQL}
    ORDER BY jc.id
    FOR UPDATE OF jc
),
claim AS (
    UPDATE journey_contacts jc SET
        status = i.status,
        current_node_id = i.current_node_id,
        step_seq = i.next_step,
        due_at = CASE WHEN i.due_in IS NOT NULL
                      THEN clock_timestamp() + make_interval(secs => i.due_in)
                      ELSE i.due_at END,
        status_reason = i.reason,
        completed_at = CASE WHEN i.completed THEN now() END,
        redispatch_count = 0,
        unpublished = false,
        updated_at = now()
    FROM input i
    WHERE jc.id = i.journey_contact_id AND jc.id IN (SELECT id FROM locked)
      AND jc.tenant_id = :tenant_id AND jc.step_seq = i.step AND jc.status IN {CLAIMABLE_SQL}
    RETURNING jc.id
),
claimed AS MATERIALIZED (
    SELECT i.* FROM input i JOIN claim ON claim.id = i.journey_contact_id
),
inserted_executions AS (
    INSERT INTO journey_node_executions (id, tenant_id, journey_contact_id, node_id, status,
        error, result, executed_at, step_seq)
    SELECT execution_id, :tenant_id, journey_contact_id, execution_node_id, execution_status,
        execution_error, CAST(execution_result AS jsonb), now(), step
    FROM claimed WHERE execution_id IS NOT NULL AND NOT execution_existing
),
completed_executions AS (
    UPDATE journey_node_executions e SET status = c.execution_status, error = c.execution_error,
        result = CAST(c.execution_result AS jsonb), executed_at = now(), step_seq = c.step,
        updated_at = now()
    FROM claimed c
    WHERE e.id = c.execution_id AND c.execution_existing
      AND e.journey_contact_id = c.journey_contact_id AND e.tenant_id = :tenant_id
),
messages AS (
    INSERT INTO messages (id, tenant_id, contact_id, journey_node_execution_id, direction, body,
        status)
    SELECT message_id, :tenant_id, contact_id, execution_id,
        '{MessageDirection.OUTBOUND.value}', message_body, '{MessageStatus.QUEUED.value}'
    FROM claimed WHERE message_id IS NOT NULL
),
locked_contacts AS MATERIALIZED (
    SELECT ct.id FROM contacts ct
    WHERE ct.id IN (SELECT contact_id FROM claimed WHERE attribute_updates IS NOT NULL)
      AND ct.tenant_id = :tenant_id
    ORDER BY ct.id
    FOR UPDATE OF ct
),
attributes AS (
    UPDATE contacts ct SET attributes = ct.attributes || CAST(c.attribute_updates AS jsonb),
        updated_at = now()
    FROM claimed c
    WHERE ct.id = c.contact_id AND ct.id IN (SELECT id FROM locked_contacts)
      AND c.attribute_updates IS NOT NULL
)
SELECT id FROM claim
""")

STILL_CURRENT_SQL = text(
    f"SELECT 1 FROM journey_contacts WHERE id = :journey_contact_id AND step_seq = :step_seq"
    f" AND status IN {CLAIMABLE_SQL}"
)
# Transaction-scoped: released by the transaction's own COMMIT or ROLLBACK, so it is safe behind
# PgBouncer's transaction pooling (a session lock and its unlock could reach different servers).
EXCLUSIVE_LOCK_SQL = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def write_parameters(tenant_id: uuid.UUID, writes: Sequence[StepWrite]) -> dict[str, Any]:
    """StepWrites as one list per column, for WRITE_SQL's unnest."""
    columns: dict[str, list[Any]] = {name: [] for name, _kind in WRITE_COLUMNS}
    for write in writes:
        execution, message = write.execution, write.message
        row: dict[str, Any] = {
            "journey_contact_id": write.journey_contact_id,
            "step": write.step_seq,
            "status": write.status,
            "current_node_id": write.current_node_id,
            "next_step": write.next_step_seq,
            "due_at": write.due_at,
            "due_in": write.due_in_seconds,
            "reason": write.status_reason,
            "completed": write.completed,
            "contact_id": write.contact_id,
            "execution_id": execution.id if execution else None,
            "execution_existing": execution.existing if execution else None,
            "execution_node_id": execution.node_id if execution else None,
            "execution_status": execution.status if execution else None,
            "execution_error": execution.error if execution else None,
            "execution_result": json.dumps(execution.result) if execution else None,
            "message_id": message.id if message else None,
            "message_body": message.body if message else None,
            "attribute_updates": (
                json.dumps(write.attribute_updates) if write.attribute_updates else None
            ),
        }
        for name, value in row.items():
            columns[name].append(value)
    return {"tenant_id": tenant_id, **columns}


class PostgresStepStore:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def connection(self) -> Connection:
        return self._connection

    def load(
        self, tenant_id: uuid.UUID, journey_contact_ids: Sequence[uuid.UUID], loop_limit: int
    ) -> dict[uuid.UUID, LoadedStep]:
        rows = self._connection.execute(
            LOAD_SQL,
            {
                "journey_contact_ids": list(journey_contact_ids),
                "tenant_id": tenant_id,
                "loop_limit": loop_limit,
            },
        )
        loaded: dict[uuid.UUID, LoadedStep] = {}
        for row in rows:
            values = row._mapping
            state = StepState(
                id=values["id"],
                tenant_id=values["tenant_id"],
                journey_id=values["journey_id"],
                contact_id=values["contact_id"],
                status=values["status"],
                current_node_id=values["current_node_id"],
                step_seq=values["step_seq"],
                due_at=as_utc(values["due_at"]),
                journey_status=values["journey_status"],
                tenant_status=values["tenant_status"],
                phone=values["phone"],
                email=values["email"],
                attributes=values["attributes"] or {},
                opted_out_at=as_utc(values["opted_out_at"]),
                db_now=values["db_now"],
            )
            # One row per contact, the recent executions as a JSON array: the state columns
            # (attributes among them) are sent and parsed once, not once per execution.
            loaded[state.id] = LoadedStep(
                state,
                tuple(_recent_from_json(item) for item in values["recent"]),
                tuple(values["loop_times"]),
            )
        return loaded

    def write(self, tenant_id: uuid.UUID, writes: Sequence[StepWrite]) -> set[uuid.UUID]:
        if not writes:
            return set()
        result = self._connection.execute(WRITE_SQL, write_parameters(tenant_id, writes))
        return set(result.scalars())

    @contextmanager
    def exclusive(self, journey_contact_id: uuid.UUID, step_seq: int) -> Iterator[StepStore | None]:
        """One transaction on its own connection: a transaction-scoped advisory lock on the
        journey contact, the re-check, the outside effect and the write. A duplicate running at
        the same moment waits on the lock, then finds the step taken. A killed process's
        transaction (and lock) goes with its connection."""
        with self._connection.engine.begin() as connection:
            connection.execute(EXCLUSIVE_LOCK_SQL, {"key": str(journey_contact_id)})
            current = connection.execute(
                STILL_CURRENT_SQL,
                {"journey_contact_id": journey_contact_id, "step_seq": step_seq},
            ).scalar()
            yield PostgresStepStore(connection) if current else None

    @contextmanager
    def transaction(self) -> Iterator[StepStore]:
        """One transaction, on this store's own connection (no second connection from the pool:
        fifty batches holding one each cannot starve each other), for a write that must commit
        together with other statements: a frequency cap's check and count."""
        connection = self._connection
        connection.exec_driver_sql("BEGIN")
        try:
            yield self
        except BaseException:
            with suppress(Exception):  # the connection may be gone: the server rolls back
                connection.exec_driver_sql("ROLLBACK")
            raise
        connection.exec_driver_sql("COMMIT")


def _recent_from_json(item: list[Any]) -> RecentExecution:
    id_, node_id, node_type, status, step_seq, executed_at, created_at = item
    return RecentExecution(
        id=uuid.UUID(id_),
        node_id=uuid.UUID(node_id) if node_id else None,
        node_type=node_type,
        status=status,
        step_seq=step_seq,
        executed_at=datetime.fromisoformat(executed_at) if executed_at else None,
        created_at=datetime.fromisoformat(created_at),
    )
