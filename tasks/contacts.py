"""journeys.update_contacts: merge attributes into up to a thousand contacts in one statement."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from db import contact_updates
from db.engine import transaction
from tasks import names
from tasks.arguments import check_kwargs, contact_updates_arg, uuid_arg
from tasks.base import JourneyTask

log = logging.getLogger("journey_worker.tasks")

# As for enroll: a message of a thousand updates stays small and its statement short.
MAX_CONTACT_UPDATES = 1000
# Skipped ids named in the log line and the result; the count is always complete.
LOGGED_SKIPPED_IDS = 20


@shared_task(bind=True, base=JourneyTask, name=names.UPDATE_CONTACTS)
def update_contacts(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Merge each update's `set` into its contact's attributes (jsonb `||`, like the
    update_contact node). Unknown ids and other tenants' contacts are skipped and reported; a
    redelivered message merges the same values again, which changes nothing."""
    check_kwargs(names.UPDATE_CONTACTS, args, kwargs)
    tenant_id = uuid_arg(kwargs, "tenant_id")
    updates = contact_updates_arg(kwargs, "updates", MAX_CONTACT_UPDATES)
    with transaction() as session:
        updated = contact_updates.merge_attributes(session, tenant_id, updates)
    skipped = [str(cid) for cid in updates if cid not in updated]
    if skipped:
        log.warning(
            "update_contacts tenant_id=%s skipped %d unknown or other tenants' contact ids: %s",
            tenant_id,
            len(skipped),
            ", ".join(skipped[:LOGGED_SKIPPED_IDS]),
        )
    log.info(
        "updated contacts tenant_id=%s requested=%d updated=%d skipped=%d",
        tenant_id,
        len(updates),
        len(updated),
        len(skipped),
    )
    return {
        "updated": len(updated),
        "skipped": len(skipped),
        "skipped_ids": skipped[:LOGGED_SKIPPED_IDS],
    }
