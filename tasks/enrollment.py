"""journeys.enroll: start up to a thousand contacts on a journey in one statement, then publish
their entry step as batch messages (large ones go to the bulk lane, tasks/lanes.py)."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from db import enrollment
from db.engine import transaction
from db.statuses import JourneyStatus
from tasks import names
from tasks.arguments import check_kwargs, uuid_arg, uuid_list_arg
from tasks.base import JourneyTask, publish
from tasks.engine import Followup, chunked, execute_batch_kwargs
from tasks.errors import PermanentError, UnknownEntity
from tasks.settings import engine_settings

log = logging.getLogger("journey_worker.tasks")


@shared_task(bind=True, base=JourneyTask, name=names.ENROLL)
def enroll(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    settings = engine_settings()
    check_kwargs(names.ENROLL, args, kwargs)
    tenant_id = uuid_arg(kwargs, "tenant_id")
    journey_id = uuid_arg(kwargs, "journey_id")
    contact_ids = uuid_list_arg(kwargs, "contact_ids", settings.enroll_max_contacts)
    with transaction() as session:
        journey = enrollment.journey_entry(session, tenant_id, journey_id)
        if journey is None:
            raise UnknownEntity("journey", journey_id)
        if journey.status != JourneyStatus.ACTIVE:
            raise PermanentError(f"journey_not_active: {journey.status}")
        if journey.entry_node_id is None:
            raise PermanentError("journey_has_no_entry_node")
        created = enrollment.enroll_contacts(
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
                names.EXECUTE_BATCH,
                execute_batch_kwargs(tenant_id, journey.entry_node_id, [(jc, 0) for jc in chunk]),
            )
            for chunk in chunked(created, settings.batch_size)
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
