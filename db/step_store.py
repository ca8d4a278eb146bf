"""The step's two statements: read everything a step needs, then claim the step and write it.

PostgreSQL runs both in autocommit, one round trip each. The write is ONE statement, so it is
its own transaction: a conditional UPDATE claims the step (`step_seq = :step` and still ACTIVE
or WAITING) and data-modifying CTEs insert the execution and the message and merge the contact's
attributes only if the claim matched. Two workers holding the same message both read, both
decide, and both try to claim: PostgreSQL serializes the two UPDATEs on the row, re-checks the
loser's WHERE against the winner's committed row, and the loser writes nothing. A message for a
step already taken is told apart from a later visit of the same node by step_seq.

SQLite (the embedded default, one writer at a time) runs the same logic as plain statements in
one transaction. The SQL here is built once per shape and cached: building SQLAlchemy
constructs per step cost more CPU than the database spent executing them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, func, select, text, update

from db.engine import get_engine, transaction
from db.models import (
    Contact,
    Journey,
    JourneyContact,
    JourneyNode,
    JourneyNodeExecution,
    Message,
    Tenant,
)
from db.queries import (
    RECENT_EXECUTIONS_LIMIT,
    RecentExecution,
    StepState,
    as_utc,
    db_now,
    seconds_from_now,
)
from db.statuses import ContactStatus, MessageDirection, MessageStatus

JC = JourneyContact
JNE = JourneyNodeExecution
CLAIMABLE = (ContactStatus.ACTIVE.value, ContactStatus.WAITING.value)


@dataclass(frozen=True)
class LoadedStep:
    state: StepState
    recent: list[RecentExecution]
    # When the current node last ran for this journey contact, newest first (the loop guard).
    loop_times: list[datetime]


@dataclass(frozen=True)
class ExecutionWrite:
    id: uuid.UUID
    # True: complete the PENDING row upstream made for this step instead of inserting one.
    existing: bool
    node_id: uuid.UUID | None
    status: str
    error: str | None
    result: dict[str, Any]


@dataclass(frozen=True)
class StepWrite:
    """Everything one step changes. Applied only if the step is still the one that was read."""

    tenant_id: uuid.UUID
    journey_contact_id: uuid.UUID
    contact_id: uuid.UUID
    step_seq: int  # the step being executed (the claim's condition)
    status: str  # the journey contact's new status
    current_node_id: uuid.UUID | None
    next_step_seq: int
    due_at: datetime | None = None
    due_in_seconds: float | None = None  # due_at relative to the database clock
    status_reason: str | None = None
    completed: bool = False
    execution: ExecutionWrite | None = None
    message_id: uuid.UUID | None = None
    message_body: str | None = None
    attribute_updates: dict[str, Any] | None = None


STATE_KEYS = tuple(StepState.__dataclass_fields__)

# --- PostgreSQL ----------------------------------------------------------------------------

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
WHERE jc.id = :journey_contact_id AND jc.tenant_id = :tenant_id
""")


@cache
def _write_sql(
    execution: str | None, message: bool, attributes: bool, due: str, completed: bool
) -> Any:
    """The one-statement write for one shape of step (cached: a handful of shapes exist)."""
    due_sql = {
        "none": "NULL",
        "at": ":due_at",
        "in": "clock_timestamp() + make_interval(secs => :due_in_seconds)",
    }[due]
    ctes = [
        f"""claim AS (
    UPDATE journey_contacts SET status = :status, current_node_id = :current_node_id,
        step_seq = :next_step_seq, due_at = {due_sql}, status_reason = :status_reason,
        completed_at = {"now()" if completed else "NULL"}, redispatch_count = 0,
        updated_at = now()
    WHERE id = :journey_contact_id AND step_seq = :step_seq
      AND status IN ('ACTIVE', 'WAITING')
    RETURNING id)"""
    ]
    if execution == "insert":
        ctes.append("""execution AS (
    INSERT INTO journey_node_executions (id, tenant_id, journey_contact_id, node_id, status,
        error, result, executed_at, step_seq)
    SELECT CAST(:execution_id AS uuid), CAST(:tenant_id AS uuid),
        CAST(:journey_contact_id AS uuid), CAST(:node_id AS uuid), :execution_status,
        :error, CAST(:result AS jsonb), now(), :step_seq FROM claim
    RETURNING id)""")
    elif execution == "update":
        ctes.append("""execution AS (
    UPDATE journey_node_executions SET status = :execution_status, error = :error,
        result = CAST(:result AS jsonb), executed_at = now(), step_seq = :step_seq,
        updated_at = now()
    WHERE id = :execution_id AND EXISTS (SELECT 1 FROM claim)
    RETURNING id)""")
    if message:
        ctes.append(f"""message AS (
    INSERT INTO messages (id, tenant_id, contact_id, journey_node_execution_id, direction, body,
        status)
    SELECT CAST(:message_id AS uuid), CAST(:tenant_id AS uuid), CAST(:contact_id AS uuid),
        execution.id,
        '{MessageDirection.OUTBOUND.value}', :message_body, '{MessageStatus.QUEUED.value}'
    FROM execution)""")
    if attributes:
        ctes.append("""attributes AS (
    UPDATE contacts SET attributes = attributes || CAST(:attribute_updates AS jsonb),
        updated_at = now()
    WHERE id = :contact_id AND tenant_id = :tenant_id AND EXISTS (SELECT 1 FROM claim))""")
    return text("WITH " + ",\n".join(ctes) + "\nSELECT count(*) FROM claim")


class PostgresStepStore:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def load(
        self, tenant_id: uuid.UUID, journey_contact_id: uuid.UUID, loop_limit: int
    ) -> LoadedStep | None:
        row = self.connection.execute(
            LOAD_SQL,
            {
                "journey_contact_id": journey_contact_id,
                "tenant_id": tenant_id,
                "loop_limit": loop_limit,
            },
        ).one_or_none()
        if row is None:
            return None
        first = row._mapping
        state = {k: first[k] for k in STATE_KEYS}
        # One row, the recent executions as a JSON array: the state columns (the contact's
        # attributes among them) are sent and parsed once, not once per execution.
        recent = [_recent_from_json(item) for item in first["recent"]]
        return LoadedStep(_state(state), recent, [as_utc(t) for t in first["loop_times"]])  # type: ignore[misc]

    def write(self, write: StepWrite) -> bool:
        execution = write.execution
        statement = _write_sql(
            None if execution is None else ("update" if execution.existing else "insert"),
            write.message_body is not None,
            bool(write.attribute_updates),
            "in" if write.due_in_seconds is not None else ("at" if write.due_at else "none"),
            write.completed,
        )
        params: dict[str, Any] = {
            "status": write.status,
            "current_node_id": write.current_node_id,
            "next_step_seq": write.next_step_seq,
            "status_reason": write.status_reason,
            "journey_contact_id": write.journey_contact_id,
            "step_seq": write.step_seq,
            "tenant_id": write.tenant_id,
            "contact_id": write.contact_id,
            "due_at": write.due_at,
            "due_in_seconds": write.due_in_seconds,
        }
        if execution is not None:
            params |= {
                "execution_id": execution.id,
                "node_id": execution.node_id,
                "execution_status": execution.status,
                "error": execution.error,
                "result": json.dumps(execution.result),
            }
        if write.message_body is not None:
            params |= {"message_id": write.message_id, "message_body": write.message_body}
        if write.attribute_updates:
            params["attribute_updates"] = json.dumps(write.attribute_updates)
        return self.connection.execute(statement, params).scalar_one() == 1

    @contextmanager
    def exclusive(self, journey_contact_id: uuid.UUID, step_seq: int) -> Iterator[bool]:
        """Hold a session advisory lock on the journey contact while an outside effect runs;
        yields whether the step is still the one that was read. A killed process's lock goes
        with its connection."""
        key = {"key": str(journey_contact_id)}
        self.connection.execute(EXCLUSIVE_LOCK_SQL, key)
        try:
            current = self.connection.execute(
                STILL_CURRENT_SQL, {"journey_contact_id": journey_contact_id, "step_seq": step_seq}
            ).scalar()
            yield bool(current)
        finally:
            self.connection.execute(EXCLUSIVE_UNLOCK_SQL, key)


EXCLUSIVE_LOCK_SQL = text("SELECT pg_advisory_lock(hashtextextended(:key, 0))")
EXCLUSIVE_UNLOCK_SQL = text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))")
STILL_CURRENT_SQL = text(
    "SELECT 1 FROM journey_contacts WHERE id = :journey_contact_id AND step_seq = :step_seq"
    " AND status IN ('ACTIVE', 'WAITING')"
)


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


def _state(values: dict[str, Any]) -> StepState:
    values["due_at"] = as_utc(values["due_at"])
    values["opted_out_at"] = as_utc(values["opted_out_at"])
    values["db_now"] = as_utc(values["db_now"])
    return StepState(**values)


# --- SQLite --------------------------------------------------------------------------------


class SqliteStepStore:
    """The same reads and the same conditional claim, as plain statements in one transaction."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def load(
        self, tenant_id: uuid.UUID, journey_contact_id: uuid.UUID, loop_limit: int
    ) -> LoadedStep | None:
        state_row = self.connection.execute(
            select(
                JC.id,
                JC.tenant_id,
                JC.journey_id,
                JC.contact_id,
                JC.status,
                JC.current_node_id,
                JC.step_seq,
                JC.due_at,
                Journey.status.label("journey_status"),
                Tenant.status.label("tenant_status"),
                Contact.phone,
                Contact.email,
                Contact.attributes,
                Contact.opted_out_at,
                db_now().label("db_now"),
            )
            .join(Journey, Journey.id == JC.journey_id)
            .join(Tenant, Tenant.id == JC.tenant_id)
            .join(Contact, Contact.id == JC.contact_id)
            .where(JC.id == journey_contact_id, JC.tenant_id == tenant_id)
        ).one_or_none()
        if state_row is None:
            return None
        state = _state(state_row._asdict())
        recent = [
            RecentExecution(**{**r._asdict(), "executed_at": as_utc(r.executed_at)})
            for r in self.connection.execute(
                select(
                    JNE.id,
                    JNE.node_id,
                    JourneyNode.type.label("node_type"),
                    JNE.status,
                    JNE.step_seq,
                    JNE.executed_at,
                    JNE.created_at,
                )
                .outerjoin(JourneyNode, JourneyNode.id == JNE.node_id)
                .where(JNE.journey_contact_id == journey_contact_id, JNE.tenant_id == tenant_id)
                .order_by(JNE.created_at.desc(), JNE.executed_at.desc())
                .limit(RECENT_EXECUTIONS_LIMIT)
            )
        ]
        loop_times = [
            as_utc(t)
            for t in self.connection.execute(
                select(JNE.executed_at)
                .where(
                    JNE.node_id == state.current_node_id,
                    JNE.journey_contact_id == journey_contact_id,
                    JNE.tenant_id == tenant_id,
                    JNE.executed_at.is_not(None),
                )
                .order_by(JNE.executed_at.desc())
                .limit(loop_limit)
            ).scalars()
        ]
        return LoadedStep(state, recent, loop_times)  # type: ignore[arg-type]

    @contextmanager
    def exclusive(self, journey_contact_id: uuid.UUID, step_seq: int) -> Iterator[bool]:
        # SQLite: the step's transaction already runs alone (one writer at a time).
        yield True

    def write(self, write: StepWrite) -> bool:
        conn = self.connection
        due_at: Any = write.due_at
        if write.due_in_seconds is not None:
            due_at = seconds_from_now(write.due_in_seconds)
        claimed = conn.execute(
            update(JC)
            .where(
                JC.id == write.journey_contact_id,
                JC.step_seq == write.step_seq,
                JC.status.in_(CLAIMABLE),
            )
            .values(
                status=write.status,
                current_node_id=write.current_node_id,
                step_seq=write.next_step_seq,
                due_at=due_at,
                status_reason=write.status_reason,
                completed_at=db_now() if write.completed else None,
                redispatch_count=0,
                updated_at=db_now(),
            )
        ).rowcount
        if claimed != 1:
            return False
        execution = write.execution
        if execution is not None:
            values = {
                "status": execution.status,
                "error": execution.error,
                "result": execution.result,
                "executed_at": db_now(),
                "step_seq": write.step_seq,
            }
            if execution.existing:
                conn.execute(update(JNE).where(JNE.id == execution.id).values(**values))
            else:
                conn.execute(
                    JNE.__table__.insert().values(
                        id=execution.id,
                        tenant_id=write.tenant_id,
                        journey_contact_id=write.journey_contact_id,
                        node_id=execution.node_id,
                        **values,
                    )
                )
        if write.message_body is not None:
            assert execution is not None
            conn.execute(
                Message.__table__.insert().values(
                    id=write.message_id,
                    tenant_id=write.tenant_id,
                    contact_id=write.contact_id,
                    journey_node_execution_id=execution.id,
                    direction=MessageDirection.OUTBOUND.value,
                    body=write.message_body,
                    status=MessageStatus.QUEUED.value,
                )
            )
        if write.attribute_updates:
            conn.execute(
                update(Contact)
                .where(Contact.id == write.contact_id, Contact.tenant_id == write.tenant_id)
                .values(
                    attributes=func.json_patch(
                        Contact.attributes, json.dumps(write.attribute_updates)
                    ),
                    updated_at=db_now(),
                )
            )
        return True


StepStore = PostgresStepStore | SqliteStepStore


@contextmanager
def step_store() -> Iterator[StepStore]:
    """A store for one step: an autocommit connection on PostgreSQL (each of the step's
    statements is its own transaction), one transaction on SQLite."""
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield PostgresStepStore(connection)
        return
    with transaction() as session:
        yield SqliteStepStore(session)
