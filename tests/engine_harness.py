"""Drive the engine the way a task does, without Celery: one transaction per step."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, func, select

from db.models import JourneyContact, JourneyNodeExecution, Message
from db.step_store import step_store
from tasks import names
from tasks.engine import StepCommand, StepOutcome, StepRunner
from tasks.lookups import JourneyReader
from tasks.settings import EngineSettings


def run_step(
    tenant_id: uuid.UUID,
    jc_id: uuid.UUID,
    node_id: uuid.UUID,
    step: int | None = None,
    *,
    settings: EngineSettings | None = None,
    reader: JourneyReader | None = None,
    http: Callable[..., Any] | None = None,
) -> StepOutcome:
    extra = {"http": http} if http else {}
    with step_store() as store:
        runner = StepRunner(
            store, reader or JourneyReader(None), settings or EngineSettings(), **extra
        )
        return runner.run(StepCommand(tenant_id, jc_id, node_id, step))


def next_steps(outcome: StepOutcome) -> list[dict[str, Any]]:
    return [f.kwargs for f in outcome.followups if f.task_name == names.EXECUTE_NODE]


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
