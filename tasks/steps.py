"""The step tasks: one node for one journey contact (upstream's execute_node) or for a batch of
them (the worker's own execute_batch). Both run the same engine; a single contact is a batch of
one. Each validates its arguments, runs the batch's two statements, and publishes what comes
next only after the write committed."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task

from cache import get_cache
from db.contact_events import WAIT_FOR_EVENT
from db.statuses import ContactStatus
from db.step_store import step_store
from tasks import metrics, names
from tasks.arguments import check_kwargs, optional_step, step_list_arg, uuid_arg
from tasks.base import JourneyTask, publish
from tasks.contact_events import catch_up
from tasks.engine import BatchCommand, BatchOutcome, StepEngine, StepRef
from tasks.journey_edits import JOURNEY_EDIT_OUTCOMES
from tasks.lookups import JourneyReader
from tasks.settings import MAX_BATCH_SIZE, engine_settings

step_log = logging.getLogger("journey_worker.steps")


@shared_task(bind=True, base=JourneyTask, name=names.EXECUTE_NODE)
def execute_node(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Upstream's task: one node for one journey contact (step optional, see docs/contract.md)."""
    check_kwargs(names.EXECUTE_NODE, args, kwargs)
    cmd = BatchCommand(
        tenant_id=uuid_arg(kwargs, "tenant_id"),
        node_id=uuid_arg(kwargs, "node_id"),
        steps=(StepRef(uuid_arg(kwargs, "journey_contact_id"), optional_step(kwargs)),),
        unknown_is_error=True,
    )
    return run_batch(self, cmd)


@shared_task(bind=True, base=JourneyTask, name=names.EXECUTE_BATCH)
def execute_batch(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The worker's own task: one node for up to BATCH_SIZE journey contacts of one tenant."""
    check_kwargs(names.EXECUTE_BATCH, args, kwargs)
    steps = step_list_arg(kwargs, "journey_contacts", MAX_BATCH_SIZE)
    cmd = BatchCommand(
        tenant_id=uuid_arg(kwargs, "tenant_id"),
        node_id=uuid_arg(kwargs, "node_id"),
        steps=tuple(StepRef(jc, step) for jc, step in steps),
    )
    return run_batch(self, cmd)


def run_batch(task: JourneyTask, cmd: BatchCommand) -> dict[str, Any]:
    started = time.perf_counter()
    with step_store() as store:
        outcome = StepEngine(store, JourneyReader(get_cache()), engine_settings()).run(cmd)
    if outcome.node_type == WAIT_FOR_EVENT:
        # An event recorded while these entries were being written ends their wait now.
        entered = [
            c.journey_contact_id
            for c in outcome.contacts
            if c.outcome == "executed" and c.contact_status == ContactStatus.WAITING
        ]
        outcome.followups += catch_up(cmd.tenant_id, entered)[0]
    publish(task.app, outcome.followups)
    duration = time.perf_counter() - started
    record(outcome, duration, task.request.id)
    return {"outcomes": dict(outcome.counts())}


def record(outcome: BatchOutcome, duration: float, task_id: str | None) -> None:
    """Metrics per contact, one log line per batch, and a line for each contact whose step did
    not simply execute (those are what an operator looks for)."""
    node_type = outcome.node_type or "none"
    counts = outcome.counts()
    for contact in outcome.contacts:
        metrics.STEPS.labels(node_type, contact.outcome, contact.execution_status or "").inc()
        if contact.detail == "loop_detected":
            metrics.LOOP_DETECTIONS.inc()
        if contact.policy is not None:
            metrics.SEND_POLICY.labels(*contact.policy).inc()
        if contact.detail in JOURNEY_EDIT_OUTCOMES:
            metrics.JOURNEY_EDITS.labels(contact.detail).inc()
    metrics.BATCH_SIZE.labels(node_type).observe(len(outcome.contacts))
    if counts.get("executed"):
        metrics.TENANT_STEPS.labels(str(outcome.tenant_id)).inc(counts["executed"])
    metrics.STEP_SECONDS.labels(node_type).observe(duration)
    base = {
        "tenant_id": str(outcome.tenant_id),
        "journey_id": str(outcome.journey_id) if outcome.journey_id else None,
        "node_id": str(outcome.node_id),
        "node_type": outcome.node_type,
        "task_id": task_id,
    }
    summary = " ".join(f"{name}={count}" for name, count in sorted(counts.items()))
    single = outcome.contacts[0].journey_contact_id if len(outcome.contacts) == 1 else None
    step_log.log(
        logging.ERROR if counts.get("failed") else logging.INFO,
        "batch tenant_id=%s journey_id=%s node_id=%s type=%s size=%d %s%s duration_ms=%.1f "
        "task_id=%s",
        outcome.tenant_id,
        outcome.journey_id,
        outcome.node_id,
        node_type,
        len(outcome.contacts),
        summary,
        f" journey_contact_id={single}" if single else "",
        duration * 1000,
        task_id,
        extra={
            "event": "batch",
            **base,
            "size": len(outcome.contacts),
            "outcomes": dict(counts),
            "journey_contact_id": str(single) if single else None,
            "duration_ms": round(duration * 1000, 2),
        },
    )
    for contact in outcome.contacts:
        if contact.outcome == "executed":
            level = logging.DEBUG
        elif contact.outcome == "failed":
            level = logging.ERROR
        elif contact.outcome == "unknown":
            level = logging.WARNING
        else:
            level = logging.INFO
        if not step_log.isEnabledFor(level):
            continue
        step_log.log(
            level,
            "step %s tenant_id=%s journey_id=%s journey_contact_id=%s node_id=%s type=%s "
            "status=%s contact=%s detail=%s task_id=%s",
            contact.outcome,
            outcome.tenant_id,
            outcome.journey_id,
            contact.journey_contact_id,
            outcome.node_id,
            node_type,
            contact.execution_status,
            contact.contact_status,
            contact.detail,
            task_id,
            extra={
                "event": "step",
                **base,
                "outcome": contact.outcome,
                "journey_contact_id": str(contact.journey_contact_id),
                "execution_status": contact.execution_status,
                "contact_status": contact.contact_status,
                "detail": contact.detail,
            },
        )
