"""The Celery tasks: thin functions that validate arguments, run one transaction, and publish
what comes next after the commit."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task

from cache import get_cache
from db import queries
from db.engine import transaction
from db.message_session import message_session
from db.statuses import ContactStatus, JourneyStatus, MessageStatus, TenantStatus
from db.step_store import step_store
from tasks import metrics, names
from tasks.arguments import check_kwargs, optional_step, uuid_arg, uuid_list_arg
from tasks.base import JourneyTask, publish
from tasks.delivery import DatabasePins, provider_from_settings
from tasks.engine import Followup, StepCommand, StepRunner, execute_step_kwargs
from tasks.errors import PermanentError, TransientError, UnknownEntity
from tasks.lookups import JourneyReader
from tasks.settings import engine_settings

log = logging.getLogger("journey_worker.tasks")
step_log = logging.getLogger("journey_worker.steps")


@shared_task(bind=True, base=JourneyTask, name=names.EXECUTE_NODE)
def execute_node(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    check_kwargs(names.EXECUTE_NODE, args, kwargs)
    cmd = StepCommand(
        tenant_id=uuid_arg(kwargs, "tenant_id"),
        journey_contact_id=uuid_arg(kwargs, "journey_contact_id"),
        node_id=uuid_arg(kwargs, "node_id"),
        step=optional_step(kwargs),
    )
    started = time.perf_counter()
    with step_store() as store:
        outcome = StepRunner(store, JourneyReader(get_cache()), engine_settings()).run(cmd)
    publish(self.app, outcome.followups)
    duration = time.perf_counter() - started

    node_type = outcome.node_type or "none"
    metrics.STEPS.labels(node_type, outcome.outcome, outcome.execution_status or "").inc()
    metrics.STEP_SECONDS.labels(node_type).observe(duration)
    if outcome.detail == "loop_detected":
        metrics.LOOP_DETECTIONS.inc()
    level = logging.ERROR if outcome.outcome == "failed" else logging.INFO
    step_log.log(
        level,
        "step %s tenant_id=%s journey_id=%s journey_contact_id=%s node_id=%s type=%s "
        "status=%s contact=%s detail=%s duration_ms=%.1f task_id=%s",
        outcome.outcome,
        cmd.tenant_id,
        outcome.journey_id,
        cmd.journey_contact_id,
        cmd.node_id,
        node_type,
        outcome.execution_status,
        outcome.contact_status,
        outcome.detail,
        duration * 1000,
        self.request.id,
        extra={
            "event": "step",
            "outcome": outcome.outcome,
            "tenant_id": str(cmd.tenant_id),
            "journey_id": outcome.journey_id,
            "journey_contact_id": str(cmd.journey_contact_id),
            "node_id": str(cmd.node_id),
            "node_type": outcome.node_type,
            "execution_status": outcome.execution_status,
            "contact_status": outcome.contact_status,
            "detail": outcome.detail,
            "duration_ms": round(duration * 1000, 2),
            "task_id": self.request.id,
        },
    )
    return {"outcome": outcome.outcome, "detail": outcome.detail}


@shared_task(bind=True, base=JourneyTask, name=names.ENROLL)
def enroll(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    settings = engine_settings()
    check_kwargs(names.ENROLL, args, kwargs)
    tenant_id = uuid_arg(kwargs, "tenant_id")
    journey_id = uuid_arg(kwargs, "journey_id")
    contact_ids = uuid_list_arg(kwargs, "contact_ids", settings.enroll_max_contacts)
    with transaction() as session:
        journey = queries.journey_entry(session, tenant_id, journey_id)
        if journey is None:
            raise UnknownEntity("journey", journey_id)
        if journey.status != JourneyStatus.ACTIVE:
            raise PermanentError(f"journey_not_active: {journey.status}")
        if journey.entry_node_id is None:
            raise PermanentError("journey_has_no_entry_node")
        created = queries.enroll_contacts(
            session,
            tenant_id=tenant_id,
            journey_id=journey_id,
            entry_node_id=journey.entry_node_id,
            contact_ids=contact_ids,
            grace_seconds=settings.redispatch_grace_seconds,
        )
    publish(
        self.app,
        (
            Followup(
                names.EXECUTE_NODE,
                execute_step_kwargs(tenant_id, jc_id, journey.entry_node_id, 0),
                queue=names.BULK_QUEUE,
            )
            for jc_id in created
        ),
    )
    skipped = len(set(contact_ids)) - len(created)
    log.info(
        "enrolled tenant_id=%s journey_id=%s requested=%d enrolled=%d "
        "skipped_unknown_or_already_open=%d",
        tenant_id,
        journey_id,
        len(contact_ids),
        len(created),
        skipped,
    )
    return {"enrolled": len(created), "skipped": skipped}


def invalidate_or_retry(done: bool) -> None:
    """An invalidation Redis did not take is retried: otherwise other workers could serve the
    old node or tenant until its TTL ends."""
    if not done:
        raise TransientError("cache invalidation failed: Redis unreachable")


@shared_task(bind=True, base=JourneyTask, name=names.JOURNEY_UPDATED)
def journey_updated(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    check_kwargs(names.JOURNEY_UPDATED, args, kwargs)
    tenant_id, journey_id = uuid_arg(kwargs, "tenant_id"), uuid_arg(kwargs, "journey_id")
    invalidate_or_retry(get_cache().invalidate_journey(str(tenant_id), str(journey_id)))
    with transaction() as session:
        status = queries.journey_status(session, tenant_id, journey_id)
        resumed = exited = 0
        if status == JourneyStatus.ACTIVE:
            resumed = queries.resume_held_contacts(
                session,
                tenant_id,
                journey_id=journey_id,
                reasons=["journey_paused", "journey_draft"],
            )
        elif status == JourneyStatus.ARCHIVED:
            exited = queries.exit_held_contacts(session, tenant_id, journey_id, "journey_archived")
    log.info(
        "journey updated tenant_id=%s journey_id=%s status=%s resumed=%d exited=%d",
        tenant_id,
        journey_id,
        status,
        resumed,
        exited,
    )
    return {"resumed": resumed, "exited": exited}


@shared_task(bind=True, base=JourneyTask, name=names.JOURNEY_DELETED)
def journey_deleted(self: JourneyTask, *args: Any, **kwargs: Any) -> None:
    check_kwargs(names.JOURNEY_DELETED, args, kwargs)
    tenant_id, journey_id = uuid_arg(kwargs, "tenant_id"), uuid_arg(kwargs, "journey_id")
    invalidate_or_retry(get_cache().invalidate_journey(str(tenant_id), str(journey_id)))
    log.info("journey deleted tenant_id=%s journey_id=%s", tenant_id, journey_id)


@shared_task(bind=True, base=JourneyTask, name=names.TENANT_UPDATED)
def tenant_updated(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    check_kwargs(names.TENANT_UPDATED, args, kwargs)
    tenant_id = uuid_arg(kwargs, "tenant_id")
    invalidate_or_retry(get_cache().invalidate_tenant(str(tenant_id)))
    resumed = 0
    with transaction() as session:
        if queries.tenant_status(session, tenant_id) == TenantStatus.ACTIVE:
            resumed = queries.resume_held_contacts(session, tenant_id, reasons=["tenant_suspended"])
    log.info("tenant updated tenant_id=%s resumed=%d", tenant_id, resumed)
    return {"resumed": resumed}


@shared_task(bind=True, base=JourneyTask, name=names.DELIVER_MESSAGE)
def deliver_message(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    check_kwargs(names.DELIVER_MESSAGE, args, kwargs)
    tenant_id, message_id = uuid_arg(kwargs, "tenant_id"), uuid_arg(kwargs, "message_id")
    # This process alone delivers the message inside the block, and each statement commits at
    # once: the provider it is committed to is on record before the call (tasks/delivery.py).
    with message_session(message_id) as session:
        message = queries.lock_message(session, tenant_id, message_id)
        if message is None:
            raise UnknownEntity("message", message_id)
        if message.status != MessageStatus.QUEUED:
            return {"outcome": "duplicate", "status": message.status}
        conversation_id = message.conversation_id or queries.ensure_conversation(
            session, tenant_id, message.contact_id
        )
        provider = provider_from_settings(engine_settings(), DatabasePins(session))
        try:
            sent = provider.send(message)
        except TransientError as exc:
            # Retried by Celery; the message stays QUEUED and says why.
            queries.note_delivery_failure(session, message_id, str(exc))
            raise
        except PermanentError as exc:
            queries.finish_message(
                session,
                message_id,
                status=MessageStatus.FAILED,
                conversation_id=conversation_id,
                error=exc.reason,
            )
            metrics.MESSAGES.labels("FAILED").inc()
            log.error(
                "sms failed for good tenant_id=%s message_id=%s reason=%s",
                tenant_id,
                message_id,
                exc.reason,
            )
            return {"outcome": "failed", "reason": exc.reason}
        queries.finish_message(
            session,
            message_id,
            status=MessageStatus.SENT,
            conversation_id=conversation_id,
            provider=sent.provider,
            provider_message_id=sent.provider_message_id,
        )
    metrics.MESSAGES.labels("SENT").inc()
    return {"outcome": "sent"}


@shared_task(bind=True, base=JourneyTask, name=names.DISPATCH_DUE)
def dispatch_due(self: JourneyTask) -> dict[str, int]:
    """Publish due waits and re-publish steps and deliveries whose message was lost."""
    settings = engine_settings()
    counts = {"steps": 0, "stalled": 0, "messages": 0}
    for _ in range(settings.dispatch_max_batches):
        with transaction() as session:
            due = queries.claim_due_steps(
                session,
                batch_size=settings.dispatch_batch_size,
                grace_seconds=settings.redispatch_grace_seconds,
            )
            stalled = [s for s in due if s.redispatch_count > settings.max_redispatches]
            orphaned = [s for s in due if s.node_id is None and s not in stalled]
            queries.finish_journey_contacts(
                session,
                [s.journey_contact_id for s in stalled],
                status=ContactStatus.FAILED,
                reason=f"stalled: re-dispatched more than {settings.max_redispatches} times",
            )
            queries.finish_journey_contacts(
                session,
                [s.journey_contact_id for s in orphaned],
                status=ContactStatus.FAILED,
                reason="node_not_found: journey contact has no current node",
            )
        runnable = [s for s in due if s not in stalled and s not in orphaned]
        publish(
            self.app,
            (
                Followup(
                    names.EXECUTE_NODE,
                    execute_step_kwargs(s.tenant_id, s.journey_contact_id, s.node_id, s.step_seq),
                )
                for s in runnable
            ),
        )
        counts["steps"] += len(runnable)
        counts["stalled"] += len(stalled) + len(orphaned)
        if len(due) < settings.dispatch_batch_size:
            break
    with transaction() as session:
        stale = queries.claim_stale_messages(
            session,
            batch_size=settings.dispatch_batch_size,
            grace_seconds=settings.redispatch_grace_seconds,
        )
    publish(
        self.app,
        (
            Followup(names.DELIVER_MESSAGE, {"tenant_id": str(t), "message_id": str(m)})
            for t, m in stale
        ),
    )
    counts["messages"] = len(stale)
    metrics.DISPATCHED.labels("step").inc(counts["steps"])
    metrics.DISPATCHED.labels("message").inc(counts["messages"])
    if any(counts.values()):
        log.info("dispatched %s", counts)
    return counts


@shared_task(
    bind=True,
    base=JourneyTask,
    name=names.PURGE_EXECUTIONS,
    # Many short transactions, far longer in all than a node: its own limits.
    soft_time_limit=600,
    time_limit=660,
)
def purge_executions(self: JourneyTask, max_batches: int = 100) -> dict[str, int]:
    """Retention: the execution log grows by millions of rows a day; old rows go in batches."""
    settings = engine_settings()
    if settings.purge_after_days <= 0:
        return {"deleted": 0}
    deleted = 0
    for _ in range(max_batches):
        with transaction() as session:
            batch = queries.purge_executions_batch(
                session,
                older_than_days=settings.purge_after_days,
                batch_size=settings.purge_batch_size,
            )
        deleted += batch
        if batch < settings.purge_batch_size:
            break
    log.info("purged %d executions older than %d days", deleted, settings.purge_after_days)
    return {"deleted": deleted}
