"""Upstream's change events: drop what the cache holds, then release or exit held contacts."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from cache import get_cache
from db import holds, lookups
from db.engine import transaction
from db.redirects import save_redirects
from db.statuses import JourneyStatus, TenantStatus
from tasks import names
from tasks.arguments import check_kwargs, redirects_arg, uuid_arg
from tasks.base import JourneyTask
from tasks.errors import BadMessage, TransientError
from tasks.journey_edits import NODE_NOT_FOUND
from tasks.send_policy import INVALID_TENANT_SETTINGS

log = logging.getLogger("journey_worker.tasks")


def invalidate_or_retry(done: bool) -> None:
    """An invalidation Redis did not take is retried: otherwise other workers could serve the
    old node or tenant until its TTL ends."""
    if not done:
        raise TransientError("cache invalidation failed: Redis unreachable")


@shared_task(bind=True, base=JourneyTask, name=names.JOURNEY_UPDATED)
def journey_updated(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    check_kwargs(names.JOURNEY_UPDATED, args, kwargs)
    tenant_id, journey_id = uuid_arg(kwargs, "tenant_id"), uuid_arg(kwargs, "journey_id")
    redirects = redirects_arg(kwargs)
    invalidate_or_retry(get_cache().invalidate_journey(str(tenant_id), str(journey_id)))
    with transaction() as session:
        status = holds.journey_status(session, tenant_id, journey_id)
        resumed = exited = 0
        if redirects:
            live = {row.id for row in lookups.journey_nodes(session, tenant_id, journey_id)}
            unknown = sorted(str(n) for n in redirects.values() if n is not None and n not in live)
            if unknown:
                raise BadMessage(
                    f"redirects name node(s) not in journey {journey_id}: {', '.join(unknown)}"
                )
            save_redirects(session, tenant_id, journey_id, redirects)
        if status == JourneyStatus.ACTIVE:
            # Contacts held because their node vanished go again: the map or the fixed graph
            # now says where (tasks/journey_edits.py), or they are held again.
            resumed = holds.resume_held_contacts(
                session,
                tenant_id,
                journey_id=journey_id,
                reasons=["journey_paused", "journey_draft", NODE_NOT_FOUND],
            )
        elif status == JourneyStatus.ARCHIVED:
            exited = holds.exit_held_contacts(session, tenant_id, journey_id, "journey_archived")
    log.info(
        "journey updated tenant_id=%s journey_id=%s status=%s redirects=%d resumed=%d exited=%d",
        tenant_id,
        journey_id,
        status,
        len(redirects),
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
        if holds.tenant_status(session, tenant_id) == TenantStatus.ACTIVE:
            resumed = holds.resume_held_contacts(
                session, tenant_id, reasons=["tenant_suspended", INVALID_TENANT_SETTINGS]
            )
    log.info("tenant updated tenant_id=%s resumed=%d", tenant_id, resumed)
    return {"resumed": resumed}
