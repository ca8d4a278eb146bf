"""The step store: how the engine reads and writes the steps of many journey contacts at once.

A step, for one journey contact or for a batch of them at the same node, is two statements:
`load` reads everything the steps need (state, gates, contact, recent executions, the loop
guard's times) and `write` claims each step and records what it did. The claim is per row: a
journey contact's step is written only if its `step_seq` is still the one that was read and it
is still ACTIVE or WAITING, so a step that another worker (or an earlier delivery of the same
message) already took writes nothing, and the others in the batch proceed.

Two implementations share this Protocol and one test suite (tests/test_engine.py runs against
both): PostgreSQL (production; each statement its own autocommit transaction) and SQLite (the
embedded default; the batch runs in one BEGIN IMMEDIATE transaction, SQLite's single writer).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from db.engine import get_engine

# The seed's "recent executions" lookup: the newest executions of the journey contact.
RECENT_EXECUTIONS_LIMIT = 10
# Deterministic ids: two workers writing the same step compute the same execution and message
# ids, so what a step records is named by the step itself.
STEP_NAMESPACE = uuid.UUID("6a41c0cc-8611-4f40-9d1e-4a3c2b7e0f19")


def step_uuid(kind: str, journey_contact_id: uuid.UUID, step_seq: int) -> uuid.UUID:
    return uuid.uuid5(STEP_NAMESPACE, f"{kind}:{journey_contact_id}:{step_seq}")


@dataclass(frozen=True)
class StepState:
    """A journey contact as the step found it, with what gates its next step."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    journey_id: uuid.UUID
    contact_id: uuid.UUID
    status: str
    current_node_id: uuid.UUID | None
    step_seq: int
    due_at: datetime | None
    journey_status: str
    tenant_status: str
    phone: str | None
    email: str | None
    attributes: dict[str, Any]
    opted_out_at: datetime | None
    db_now: datetime


@dataclass(frozen=True)
class RecentExecution:
    id: uuid.UUID
    node_id: uuid.UUID | None
    node_type: str | None
    status: str
    step_seq: int | None
    executed_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class LoadedStep:
    state: StepState
    recent: tuple[RecentExecution, ...]
    # When the current node last ran for this journey contact, newest first (the loop guard).
    loop_times: tuple[datetime, ...]


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
class MessageWrite:
    id: uuid.UUID
    body: str


@dataclass(frozen=True)
class StepWrite:
    """Everything one journey contact's step changes; applied only if its claim holds."""

    journey_contact_id: uuid.UUID
    contact_id: uuid.UUID
    step_seq: int  # the step being executed: the claim's condition
    status: str  # the journey contact's new status
    current_node_id: uuid.UUID | None
    next_step_seq: int
    # When the new state is due: an absolute time (a wait), or seconds from the database's
    # clock (the re-dispatch deadline of a published step); neither means not due.
    due_at: datetime | None = None
    due_in_seconds: float | None = None
    status_reason: str | None = None
    completed: bool = False
    execution: ExecutionWrite | None = None
    message: MessageWrite | None = None
    attribute_updates: dict[str, Any] | None = None


class StepStore(Protocol):
    """Reads and conditional writes of steps. One store serves one task's batch."""

    @property
    def connection(self) -> Connection:
        """The connection lookups behind the cache may read through."""
        ...

    def load(
        self, tenant_id: uuid.UUID, journey_contact_ids: Sequence[uuid.UUID], loop_limit: int
    ) -> dict[uuid.UUID, LoadedStep]:
        """The tenant's journey contacts among the ids, in one statement (PostgreSQL). Unknown
        ids and other tenants' ids are simply absent."""
        ...

    def write(self, tenant_id: uuid.UUID, writes: Sequence[StepWrite]) -> set[uuid.UUID]:
        """Claim each step and apply its write; returns the journey contacts whose claim held."""
        ...

    def exclusive(
        self, journey_contact_id: uuid.UUID, step_seq: int
    ) -> AbstractContextManager[StepStore | None]:
        """For a step with an outside effect (a webhook): hold the journey contact exclusively,
        re-check that the step is still current, and yield a store whose writes happen while
        it is held (None if the step was taken meanwhile)."""
        ...

    def transaction(self) -> AbstractContextManager[StepStore]:
        """A store whose statements share one transaction, committed at the end (the frequency
        cap's lock, count and the step's write)."""
        ...


@contextmanager
def step_store() -> Iterator[StepStore]:
    """A store for one task: an autocommit connection on PostgreSQL (each statement is its own
    transaction), one BEGIN IMMEDIATE transaction on SQLite."""
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        from db.postgres_step_store import PostgresStepStore

        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield PostgresStepStore(connection)
        return
    from db.sqlite_step_store import SqliteStepStore

    with (
        engine.connect().execution_options(sqlite_begin="IMMEDIATE") as connection,
        connection.begin(),
    ):
        yield SqliteStepStore(connection)
