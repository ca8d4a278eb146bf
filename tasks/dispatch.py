"""journeys.dispatch_due: publish due waits and re-publish steps and deliveries whose message
was lost, as batch messages grouped by node."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict

from celery import shared_task

from db import delivery, dispatch
from db.engine import transaction
from db.statuses import ContactStatus
from tasks import metrics, names
from tasks.base import JourneyTask, publish
from tasks.engine import Followup, chunked, execute_batch_kwargs
from tasks.settings import engine_settings

log = logging.getLogger("journey_worker.tasks")


@shared_task(bind=True, base=JourneyTask, name=names.DISPATCH_DUE)
def dispatch_due(self: JourneyTask) -> dict[str, int]:
    """Publish due waits and re-publish steps and deliveries whose message was lost."""
    settings = engine_settings()
    counts = {"steps": 0, "stalled": 0, "messages": 0}
    for _ in range(settings.dispatch_max_batches):
        with transaction() as session:
            due = dispatch.claim_due_steps(
                session,
                batch_size=settings.dispatch_batch_size,
                grace_seconds=settings.redispatch_grace_seconds,
            )
            stalled = [s for s in due if s.redispatch_count > settings.max_redispatches]
            orphaned = [s for s in due if s.node_id is None and s not in stalled]
            dispatch.finish_journey_contacts(
                session,
                [s.journey_contact_id for s in stalled],
                status=ContactStatus.FAILED,
                reason=f"stalled: re-dispatched more than {settings.max_redispatches} times",
            )
            dispatch.finish_journey_contacts(
                session,
                [s.journey_contact_id for s in orphaned],
                status=ContactStatus.FAILED,
                reason="node_not_found: journey contact has no current node",
            )
        runnable = [s for s in due if s not in stalled and s not in orphaned]
        groups: dict[tuple[uuid.UUID, uuid.UUID], list[tuple[uuid.UUID, int]]] = defaultdict(list)
        for step in runnable:
            assert step.node_id is not None
            groups[(step.tenant_id, step.node_id)].append((step.journey_contact_id, step.step_seq))
        publish(
            self.app,
            (
                Followup(names.EXECUTE_BATCH, execute_batch_kwargs(tenant_id, node_id, chunk))
                for (tenant_id, node_id), steps in groups.items()
                for chunk in chunked(steps, settings.batch_size)
            ),
        )
        counts["steps"] += len(runnable)
        counts["stalled"] += len(stalled) + len(orphaned)
        if len(due) < settings.dispatch_batch_size:
            break
    with transaction() as session:
        stale = delivery.claim_stale_messages(
            session,
            batch_size=settings.dispatch_batch_size,
            grace_seconds=settings.redispatch_grace_seconds,
        )
    by_tenant: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for tenant_id, message_id in stale:
        by_tenant[tenant_id].append(message_id)
    publish(
        self.app,
        (
            Followup(
                names.DELIVER_MESSAGES,
                {"tenant_id": str(tenant_id), "message_ids": [str(m) for m in chunk]},
            )
            for tenant_id, ids in by_tenant.items()
            for chunk in chunked(ids, settings.batch_size)
        ),
    )
    counts["messages"] = len(stale)
    metrics.DISPATCHED.labels("step").inc(counts["steps"])
    metrics.DISPATCHED.labels("message").inc(counts["messages"])
    if any(counts.values()):
        log.info("dispatched %s", counts)
    return counts
