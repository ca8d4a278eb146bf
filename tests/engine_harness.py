"""Drive the engine the way the step tasks do, without Celery: one store per batch."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, func, select, update

from db.clock import seconds_from_now
from db.models import JourneyContact, JourneyNodeExecution, Message
from db.step_store import step_store
from tasks import names
from tasks.engine import BatchCommand, BatchOutcome, StepEngine, StepRef
from tasks.lookups import JourneyReader
from tasks.settings import EngineSettings


def run_batch(
    tenant_id: uuid.UUID,
    node_id: uuid.UUID,
    steps: Sequence[tuple[uuid.UUID, int | None]],
    *,
    unknown_is_error: bool = False,
    settings: EngineSettings | None = None,
    reader: JourneyReader | None = None,
    http: Callable[..., Any] | None = None,
) -> BatchOutcome:
    extra = {"http": http} if http else {}
    command = BatchCommand(
        tenant_id, node_id, tuple(StepRef(jc, step) for jc, step in steps), unknown_is_error
    )
    with step_store() as store:
        engine = StepEngine(
            store, reader or JourneyReader(None), settings or EngineSettings(), **extra
        )
        return engine.run(command)


def run_step(
    tenant_id: uuid.UUID,
    jc_id: uuid.UUID,
    node_id: uuid.UUID,
    step: int | None = None,
    **kwargs: Any,
) -> StepOutcome:
    """One contact, as upstream's execute_node runs it."""
    return StepOutcome(
        run_batch(tenant_id, node_id, [(jc_id, step)], unknown_is_error=True, **kwargs)
    )


class StepOutcome:
    """A batch of one seen as one contact's step."""

    def __init__(self, batch: BatchOutcome) -> None:
        assert len(batch.contacts) == 1, batch.contacts
        self.batch = batch
        contact = batch.contacts[0]
        self.outcome = contact.outcome
        self.detail = contact.detail
        self.execution_status = contact.execution_status
        self.contact_status = contact.contact_status
        self.node_type = batch.node_type
        self.followups = batch.followups


def next_steps(outcome: StepOutcome | BatchOutcome) -> list[dict[str, Any]]:
    """The published next steps, one dict per journey contact (node_id, step)."""
    followups = outcome.followups
    steps = []
    for followup in followups:
        if followup.task_name == names.EXECUTE_BATCH:
            for jc, step in followup.kwargs["journey_contacts"]:
                steps.append(
                    {"journey_contact_id": jc, "node_id": followup.kwargs["node_id"], "step": step}
                )
        elif followup.task_name == names.EXECUTE_NODE:
            steps.append(dict(followup.kwargs))
    return steps


def deliveries(outcome: StepOutcome | BatchOutcome) -> list[str]:
    return [
        message_id
        for f in outcome.followups
        if f.task_name == names.DELIVER_MESSAGES
        for message_id in f.kwargs["message_ids"]
    ]


def walk(
    tenant_id: uuid.UUID,
    jc_id: uuid.UUID,
    node_id: uuid.UUID,
    step: int | None = None,
    *,
    limit: int = 50,
    **kwargs: Any,
) -> list[StepOutcome]:
    """Follow the published next steps until there are none (waits stop the walk)."""
    outcomes = []
    for _ in range(limit):
        outcome = run_step(tenant_id, jc_id, node_id, step, **kwargs)
        outcomes.append(outcome)
        following = next_steps(outcome)
        if not following:
            return outcomes
        node_id, step = uuid.UUID(following[0]["node_id"]), following[0]["step"]
    raise AssertionError("journey did not stop within the limit")


def make_due(engine: Engine, *journey_contact_ids: uuid.UUID) -> None:
    """Time passes: the journey contacts' wait or grace period is over."""
    with engine.begin() as conn:
        conn.execute(
            update(JourneyContact)
            .where(JourneyContact.id.in_(journey_contact_ids))
            .values(due_at=seconds_from_now(-1))
        )


def row_counts(engine: Engine, jc_id: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        jc = conn.execute(select(JourneyContact).where(JourneyContact.id == jc_id)).one()
        executions = conn.execute(
            select(func.count()).where(JourneyNodeExecution.journey_contact_id == jc_id)
        ).scalar_one()
        messages = conn.execute(
            select(func.count())
            .select_from(Message)
            .join(
                JourneyNodeExecution, JourneyNodeExecution.id == Message.journey_node_execution_id
            )
            .where(JourneyNodeExecution.journey_contact_id == jc_id)
        ).scalar_one()
    return {
        "status": jc.status,
        "reason": jc.status_reason,
        "step": jc.step_seq,
        "executions": executions,
        "messages": messages,
        "due_at": jc.due_at,
        "current_node_id": jc.current_node_id,
    }
