"""Upstream's change events: drop what the cache holds, then release or exit held contacts."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from cache import get_cache
from db import holds
from db.engine import transaction
from db.statuses import JourneyStatus, TenantStatus
from tasks import names
from tasks.arguments import check_kwargs, uuid_arg
from tasks.base import JourneyTask
from tasks.errors import TransientError
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
    invalidate_or_retry(get_cache().invalidate_journey(str(tenant_id), str(journey_id)))
    with transaction() as session:
        status = holds.journey_status(session, tenant_id, journey_id)
        resumed = exited = 0
        if status == JourneyStatus.ACTIVE:
            resumed = holds.resume_held_contacts(
                session,
                tenant_id,
                journey_id=journey_id,
                reasons=["journey_paused", "journey_draft"],
            )
        elif status == JourneyStatus.ARCHIVED:
            exited = holds.exit_held_contacts(session, tenant_id, journey_id, "journey_archived")
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
        if holds.tenant_status(session, tenant_id) == TenantStatus.ACTIVE:
            resumed = holds.resume_held_contacts(
                session, tenant_id, reasons=["tenant_suspended", INVALID_TENANT_SETTINGS]
            )
    log.info("tenant updated tenant_id=%s resumed=%d", tenant_id, resumed)
    return {"resumed": resumed}
