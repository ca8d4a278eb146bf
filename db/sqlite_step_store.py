"""The step store on SQLite, the embedded default: the same reads and the same per-row claim as
plain statements, inside the one BEGIN IMMEDIATE transaction that db.step_store.step_store()
opens for the task.

BEGIN IMMEDIATE takes SQLite's write lock before the first read, so two threads or processes
never read the same step and both act on it: the second waits for the first to commit, then
reads the step as taken. That also makes `exclusive` (for webhooks) a re-check only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from db.clock import as_utc, db_now, seconds_from_now, to_utc
from db.models import (
    Contact,
    Journey,
    JourneyContact,
    JourneyNode,
    JourneyNodeExecution,
    Message,
    Tenant,
)
from db.statuses import ContactStatus, MessageDirection, MessageStatus
from db.step_store import (
    RECENT_EXECUTIONS_LIMIT,
    LoadedStep,
    RecentExecution,
    StepState,
    StepStore,
    StepWrite,
)

JC = JourneyContact
JNE = JourneyNodeExecution
CLAIMABLE = (ContactStatus.ACTIVE.value, ContactStatus.WAITING.value)


class SqliteStepStore:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def connection(self) -> Connection:
        return self._connection

    def load(
        self, tenant_id: uuid.UUID, journey_contact_ids: Sequence[uuid.UUID], loop_limit: int
    ) -> dict[uuid.UUID, LoadedStep]:
        ids = list(journey_contact_ids)
        if not ids:
            return {}
        conn = self._connection
        states = {
            row.id: StepState(
                **{
                    **row._asdict(),
                    "due_at": as_utc(row.due_at),
                    "opted_out_at": as_utc(row.opted_out_at),
                    "db_now": as_utc(row.db_now),
                    "attributes": row.attributes or {},
                }
            )
            for row in conn.execute(
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
                .where(JC.id.in_(ids), JC.tenant_id == tenant_id)
            )
        }
        recent: dict[uuid.UUID, list[RecentExecution]] = {id_: [] for id_ in states}
        newest_first = (
            func.row_number()
            .over(
                partition_by=JNE.journey_contact_id,
                order_by=(JNE.created_at.desc(), JNE.executed_at.desc()),
            )
            .label("rank")
        )
        ranked = (
            select(
                JNE.journey_contact_id,
                JNE.id,
                JNE.node_id,
                JourneyNode.type.label("node_type"),
                JNE.status,
                JNE.step_seq,
                JNE.executed_at,
                JNE.created_at,
                newest_first,
            )
            .outerjoin(JourneyNode, JourneyNode.id == JNE.node_id)
            .where(JNE.journey_contact_id.in_(list(states)), JNE.tenant_id == tenant_id)
            .subquery()
        )
        for row in conn.execute(
            select(ranked)
            .where(ranked.c.rank <= RECENT_EXECUTIONS_LIMIT)
            .order_by(ranked.c.journey_contact_id, ranked.c.rank)
        ):
            recent[row.journey_contact_id].append(
                RecentExecution(
                    id=row.id,
                    node_id=row.node_id,
                    node_type=row.node_type,
                    status=row.status,
                    step_seq=row.step_seq,
                    executed_at=as_utc(row.executed_at),
                    created_at=as_utc(row.created_at),  # type: ignore[arg-type]
                )
            )
        loop_times: dict[uuid.UUID, list[Any]] = {id_: [] for id_ in states}
        latest_first = (
            func.row_number()
            .over(partition_by=JNE.journey_contact_id, order_by=JNE.executed_at.desc())
            .label("rank")
        )
        runs = (
            select(JNE.journey_contact_id, JNE.executed_at, latest_first)
            .join(JC, (JC.id == JNE.journey_contact_id) & (JC.current_node_id == JNE.node_id))
            .where(
                JNE.journey_contact_id.in_(list(states)),
                JNE.tenant_id == tenant_id,
                JNE.executed_at.is_not(None),
            )
            .subquery()
        )
        for row in conn.execute(
            select(runs.c.journey_contact_id, runs.c.executed_at)
            .where(runs.c.rank <= loop_limit)
            .order_by(runs.c.journey_contact_id, runs.c.rank)
        ):
            loop_times[row.journey_contact_id].append(as_utc(row.executed_at))
        return {
            id_: LoadedStep(state, tuple(recent[id_]), tuple(loop_times[id_]))
            for id_, state in states.items()
        }

    def write(self, tenant_id: uuid.UUID, writes: Sequence[StepWrite]) -> set[uuid.UUID]:
        claimed: set[uuid.UUID] = set()
        for write in writes:
            if self._write_one(tenant_id, write):
                claimed.add(write.journey_contact_id)
        return claimed

    def _write_one(self, tenant_id: uuid.UUID, write: StepWrite) -> bool:
        conn = self._connection
        due_at: Any = to_utc(write.due_at) if write.due_at else None
        if write.due_in_seconds is not None:
            due_at = seconds_from_now(write.due_in_seconds)
        claimed = conn.execute(
            update(JC)
            .where(
                JC.id == write.journey_contact_id,
                JC.tenant_id == tenant_id,
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
                unpublished=False,
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
                conn.execute(
                    update(JNE)
                    .where(
                        JNE.id == execution.id,
                        JNE.journey_contact_id == write.journey_contact_id,
                        JNE.tenant_id == tenant_id,
                    )
                    .values(**values, updated_at=db_now())
                )
            else:
                conn.execute(
                    insert(JNE).values(
                        id=execution.id,
                        tenant_id=tenant_id,
                        journey_contact_id=write.journey_contact_id,
                        node_id=execution.node_id,
                        **values,
                    )
                )
        if write.message is not None:
            assert execution is not None, "a message belongs to its step's execution"
            conn.execute(
                insert(Message).values(
                    id=write.message.id,
                    tenant_id=tenant_id,
                    contact_id=write.contact_id,
                    journey_node_execution_id=execution.id,
                    direction=MessageDirection.OUTBOUND.value,
                    body=write.message.body,
                    status=MessageStatus.QUEUED.value,
                )
            )
        if write.attribute_updates:
            # PostgreSQL's jsonb `||`: a shallow merge where a null value is stored as null
            # (SQLite's json_patch would delete the key instead), done here in one transaction.
            current = conn.execute(
                select(Contact.attributes).where(
                    Contact.id == write.contact_id, Contact.tenant_id == tenant_id
                )
            ).scalar_one()
            merged = {**(current or {}), **write.attribute_updates}
            conn.execute(
                update(Contact)
                .where(Contact.id == write.contact_id, Contact.tenant_id == tenant_id)
                .values(attributes=merged, updated_at=db_now())
            )
        return True

    @contextmanager
    def exclusive(self, journey_contact_id: uuid.UUID, step_seq: int) -> Iterator[StepStore | None]:
        # The task's BEGIN IMMEDIATE transaction already holds SQLite's write lock, taken before
        # the step was read: no other writer can have taken the step since. Re-check anyway.
        current = self._connection.execute(
            select(JC.id).where(
                JC.id == journey_contact_id,
                JC.step_seq == step_seq,
                JC.status.in_(CLAIMABLE),
            )
        ).first()
        yield self if current else None

    @contextmanager
    def transaction(self) -> Iterator[StepStore]:
        # The task's BEGIN IMMEDIATE transaction is already the one transaction of the batch.
        yield self
