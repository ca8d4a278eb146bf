"""journeys.dispatch_due: publish what is due, on the dispatcher's own queue every few seconds.

Each run:
1. looks at the step queues (their depth, through the broker) and records what it saw;
2. publishes scheduled steps (due waits, unpublished steps), each tenant's oldest first,
   whatever the backlog: they are in no queue;
3. only if the step queues have been quiet for REDISPATCH_QUIET_SECONDS, re-publishes steps
   that did not run within their grace period (then their message was lost, not queued), and
   deliveries whose task was lost; a step re-published more than MAX_REDISPATCHES times fails as
   `stalled`;
4. publishes deliveries that a tenant's send rate deferred, once their time has come.

Everything goes out as batch messages grouped by tenant and node (tasks/lanes.py routes them).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence

from celery import Celery, shared_task
from kombu.exceptions import KombuError

from db import delivery, dispatch
from db.engine import transaction
from db.statuses import ContactStatus
from tasks import metrics, names
from tasks.base import JourneyTask, publish
from tasks.engine import Followup, chunked, execute_batch_kwargs
from tasks.settings import EngineSettings, engine_settings

log = logging.getLogger("journey_worker.tasks")


@shared_task(bind=True, base=JourneyTask, name=names.DISPATCH_DUE)
def dispatch_due(self: JourneyTask) -> dict[str, int]:
    settings = engine_settings()
    depths = lane_depths(self.app, names.STEP_QUEUES)
    for lane, depth in depths.items():
        metrics.QUEUE_DEPTH.labels(lane).set(-1 if depth is None else depth)
    with transaction() as session:
        quiet_for = dispatch.observe_lanes(session, depths)
    quiet = quiet_for >= settings.redispatch_quiet_seconds
    counts = {"steps": 0, "late": 0, "stalled": 0, "messages": 0, "deferred_messages": 0}
    for _ in range(settings.dispatch_max_batches):
        with transaction() as session:
            due = dispatch.claim_scheduled_steps(
                session,
                # Half a claim of each tenant at most, tenants in random order: every tenant
                # with due rows gets its share of each run, not only the one with the oldest.
                per_tenant=max(settings.dispatch_batch_size // 2, 1),
                limit=settings.dispatch_batch_size,
                grace_seconds=settings.redispatch_grace_seconds,
            )
            runnable = _fail_orphans(session, due)
        for step in due:
            metrics.DISPATCH_LAG.observe(max(step.late_seconds, 0.0))
        publish(self.app, _batches(runnable, settings))
        counts["steps"] += len(runnable)
        counts["stalled"] += len(due) - len(runnable)
        if not due:  # a short claim may only mean one tenant's share was used up
            break
    if quiet:
        for _ in range(settings.dispatch_max_batches):
            with transaction() as session:
                late = dispatch.claim_late_steps(
                    session,
                    limit=settings.dispatch_batch_size,
                    grace_seconds=settings.redispatch_grace_seconds,
                )
                stalled = [s for s in late if s.redispatch_count > settings.max_redispatches]
                dispatch.finish_journey_contacts(
                    session,
                    [s.journey_contact_id for s in stalled],
                    status=ContactStatus.FAILED,
                    reason=f"stalled: re-dispatched more than {settings.max_redispatches} times",
                )
                runnable = _fail_orphans(session, [s for s in late if s not in stalled])
            publish(self.app, _batches(runnable, settings))
            counts["late"] += len(runnable)
            counts["stalled"] += len(late) - len(runnable)
            if len(late) < settings.dispatch_batch_size:
                break
        with transaction() as session:
            stale = delivery.claim_stale_messages(
                session,
                batch_size=settings.dispatch_batch_size,
                grace_seconds=settings.redispatch_grace_seconds,
            )
        publish(self.app, _deliveries(stale, settings))
        counts["messages"] = len(stale)
    with transaction() as session:
        deferred = delivery.claim_deferred_messages(
            session, batch_size=settings.dispatch_batch_size
        )
    publish(self.app, _deliveries(deferred, settings))
    counts["deferred_messages"] = len(deferred)
    metrics.DISPATCHED.labels("step").inc(counts["steps"])
    metrics.DISPATCHED.labels("late_step").inc(counts["late"])
    metrics.DISPATCHED.labels("message").inc(counts["messages"] + counts["deferred_messages"])
    if any(counts.values()):
        log.info("dispatched %s quiet_for=%.1fs", counts, quiet_for)
    return counts


def lane_depths(app: Celery, queues: Sequence[str]) -> dict[str, int | None]:
    """Messages waiting in each queue, as the broker counts them (a passive declare, which
    Redis, RabbitMQ and the embedded broker all answer); None where the broker would not say."""
    depths: dict[str, int | None] = {}
    try:
        with app.connection_for_read() as connection:
            for queue in queues:
                # A channel each: RabbitMQ closes the channel of a passive declare that fails.
                channel = connection.channel()
                try:
                    depths[queue] = int(channel.queue_declare(queue=queue, passive=True)[1])
                except Exception as exc:
                    if _not_found(exc):
                        # Never declared here (a broker restarted empty): nothing waits in it.
                        depths[queue] = 0
                    else:
                        log.warning("cannot tell the depth of queue %s: %s", queue, exc)
                        depths[queue] = None
                finally:
                    with contextlib.suppress(Exception):  # closed by the broker already
                        channel.close()
    except (KombuError, OSError) as exc:
        log.warning("cannot reach the broker to measure the queues: %s", exc)
        return dict.fromkeys(queues)
    return depths


def _not_found(exc: BaseException) -> bool:
    """RabbitMQ's 404 on a passive declare, and kombu's virtual transports' imitation of it."""
    return getattr(exc, "reply_code", None) == 404 or "NOT_FOUND" in str(exc)


def _fail_orphans(session: object, due: list[dispatch.DueStep]) -> list[dispatch.DueStep]:
    """Steps with no current node can never run: FAILED with the reason; the rest run."""
    orphaned = [s for s in due if s.node_id is None]
    dispatch.finish_journey_contacts(
        session,  # type: ignore[arg-type]
        [s.journey_contact_id for s in orphaned],
        status=ContactStatus.FAILED,
        reason="node_not_found: journey contact has no current node",
    )
    return [s for s in due if s.node_id is not None]


def _batches(steps: Iterable[dispatch.DueStep], settings: EngineSettings) -> list[Followup]:
    groups: dict[tuple[uuid.UUID, uuid.UUID], list[tuple[uuid.UUID, int]]] = defaultdict(list)
    for step in steps:
        assert step.node_id is not None
        groups[(step.tenant_id, step.node_id)].append((step.journey_contact_id, step.step_seq))
    return [
        Followup(names.EXECUTE_BATCH, execute_batch_kwargs(tenant_id, node_id, chunk))
        for (tenant_id, node_id), members in groups.items()
        for chunk in chunked(members, settings.batch_size)
    ]


def _deliveries(
    messages: Iterable[tuple[uuid.UUID, uuid.UUID]], settings: EngineSettings
) -> list[Followup]:
    by_tenant: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for tenant_id, message_id in messages:
        by_tenant[tenant_id].append(message_id)
    return [
        Followup(
            names.DELIVER_MESSAGES,
            {"tenant_id": str(tenant_id), "message_ids": [str(m) for m in chunk]},
        )
        for tenant_id, ids in by_tenant.items()
        for chunk in chunked(ids, settings.batch_size)
    ]
