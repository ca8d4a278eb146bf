"""Contact events (journeys.contact_event) and the event side of wait_for_event nodes.

An event is recorded once per event_id, then ends the waits it matches: each waiting journey
contact's step is claimed with the SAME conditional write as the timeout's (the step store's
`step_seq = :step AND status IN ('ACTIVE', 'WAITING')`, rows locked in id order), so whichever
of the event, a duplicate of it, another worker's copy or the timeout writes first wins, and
the others find the step taken and write nothing. An event that happened before the contact
entered the wait does not match.

A contact that enters a wait while an event is being recorded could miss it (the event's
lookup ran before the entry committed): right after the entry commits, tasks/steps.py calls
`catch_up`, which looks for events recorded since the entry. Between the two lookups every
event is seen by one of them: it either committed before catch_up's read, or its own lookup
ran after the entry committed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from celery import shared_task

from db import contact_events as events_db
from db.contact_events import StoredEvent, WaitingStep
from db.engine import transaction
from db.models import Contact
from db.statuses import ContactStatus, ExecutionStatus
from db.step_store import ExecutionWrite, StepWrite, step_store, step_uuid
from tasks import names
from tasks.arguments import check_kwargs, optional_time_arg, string_arg, uuid_arg
from tasks.base import JourneyTask, publish
from tasks.engine import Followup, execute_batch_kwargs
from tasks.errors import BadMessage, PermanentError, UnknownEntity
from tasks.node_config import MAX_EVENT_NAME, WaitForEventConfig, parse_node_config
from tasks.settings import engine_settings

log = logging.getLogger("journey_worker.events")

MAX_EVENT_ID = 255
MAX_PROPERTIES_KEYS = 100


@shared_task(bind=True, base=JourneyTask, name=names.CONTACT_EVENT)
def contact_event(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    check_kwargs(names.CONTACT_EVENT, args, kwargs)
    tenant_id = uuid_arg(kwargs, "tenant_id")
    contact_id = uuid_arg(kwargs, "contact_id")
    name = string_arg(kwargs, "name", MAX_EVENT_NAME)
    properties = kwargs.get("properties") or {}
    if not isinstance(properties, dict):
        raise BadMessage(f"properties must be an object, got {type(properties).__name__}")
    if len(properties) > MAX_PROPERTIES_KEYS:
        raise BadMessage(f"properties has more than {MAX_PROPERTIES_KEYS} keys")
    occurred_at = optional_time_arg(kwargs, "occurred_at")
    event_id = None
    if kwargs.get("event_id") is not None:
        event_id = string_arg(kwargs, "event_id", MAX_EVENT_ID)
    with transaction() as session:
        contact = session.get(Contact, contact_id)
        if contact is None or contact.tenant_id != tenant_id:
            raise UnknownEntity("contact", contact_id)
        event = events_db.record_event(
            session,
            tenant_id=tenant_id,
            contact_id=contact_id,
            name=name,
            properties=properties,
            occurred_at=occurred_at,
            event_id=event_id,
        )
    followups, matched = match_event(tenant_id, event)
    publish(self.app, followups)
    log.info(
        "contact event tenant_id=%s contact_id=%s name=%s event_id=%s new=%s matched=%d",
        tenant_id,
        contact_id,
        name,
        event_id,
        event.created,
        len(matched),
    )
    return {"recorded": event.created, "matched": len(matched)}


def event_matches(config: WaitForEventConfig, event: StoredEvent, wait: WaitingStep) -> bool:
    """Same name, every `where` property equal, and it happened while the wait lasted: at or
    after its entry, before its timeout."""
    if event.name != config.event or event.occurred_at < wait.entered_at:
        return False
    if wait.due_at is not None and event.occurred_at >= wait.due_at:
        return False
    return all(
        key in event.properties and event.properties[key] == value
        for key, value in config.where.items()
    )


def _matched_write(step: WaitingStep, config: WaitForEventConfig, event: StoredEvent) -> StepWrite:
    """The wait's step, resolved by the event: the execution says which event, the contact
    goes on to matched_node_id (or completes)."""
    step_seq = step.step_seq
    execution = ExecutionWrite(
        id=step_uuid("execution", step.journey_contact_id, step_seq),
        existing=False,
        node_id=step.node_id,
        status=ExecutionStatus.COMPLETED,
        error=None,
        result={
            "event": event.name,
            "matched": True,
            "contact_event_id": str(event.id),
            "event_id": event.event_id,
        },
    )
    base: dict[str, Any] = {
        "journey_contact_id": step.journey_contact_id,
        "contact_id": step.contact_id,
        "step_seq": step_seq,
        "next_step_seq": step_seq + 1,
        "execution": execution,
    }
    if config.matched_node_id is None:
        return StepWrite(
            **base, status=ContactStatus.COMPLETED, current_node_id=None, completed=True
        )
    return StepWrite(
        **base,
        status=ContactStatus.ACTIVE,
        current_node_id=config.matched_node_id,
        due_in_seconds=engine_settings().redispatch_grace_seconds,
    )


def resolve_waits(
    tenant_id: uuid.UUID, waits: Sequence[WaitingStep], events: Iterable[StoredEvent]
) -> tuple[list[Followup], set[uuid.UUID]]:
    """For each wait the first matching event (oldest first) claims the step. Returns the
    followups (the matched nodes' batches) and the journey contacts whose claim held."""
    ordered = sorted(events, key=lambda e: (e.occurred_at, str(e.id)))
    writes: list[StepWrite] = []
    next_nodes: dict[uuid.UUID, uuid.UUID] = {}
    for wait in waits:
        try:
            config = parse_node_config("wait_for_event", wait.config)
        except PermanentError:
            continue  # the timeout fails the contact with the reason
        assert isinstance(config, WaitForEventConfig)
        event = next(
            (
                e
                for e in ordered
                if e.contact_id == wait.contact_id and event_matches(config, e, wait)
            ),
            None,
        )
        if event is None:
            continue
        writes.append(_matched_write(wait, config, event))
        if config.matched_node_id is not None:
            next_nodes[wait.journey_contact_id] = config.matched_node_id
    if not writes:
        return [], set()
    with step_store() as store:
        claimed = store.write(tenant_id, writes)
    by_node: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {}
    for write in writes:
        node_id = next_nodes.get(write.journey_contact_id)
        if write.journey_contact_id in claimed and node_id is not None:
            by_node.setdefault(node_id, []).append((write.journey_contact_id, write.next_step_seq))
    followups = [
        Followup(names.EXECUTE_BATCH, execute_batch_kwargs(tenant_id, node_id, steps))
        for node_id, steps in by_node.items()
    ]
    return followups, claimed


def match_event(tenant_id: uuid.UUID, event: StoredEvent) -> tuple[list[Followup], set[uuid.UUID]]:
    """End the waits of the event's contact that it matches (after the event committed)."""
    with transaction() as session:
        waits = events_db.waiting_steps(session, tenant_id, event.contact_id)
    return resolve_waits(tenant_id, waits, [event])


def catch_up(
    tenant_id: uuid.UUID, journey_contact_ids: Sequence[uuid.UUID]
) -> tuple[list[Followup], set[uuid.UUID]]:
    """Journey contacts that just entered a wait_for_event: end the wait at once with an event
    recorded since they entered it (one that arrived while the entry was being written)."""
    if not journey_contact_ids:
        return [], set()
    with transaction() as session:
        waits = events_db.waiting_steps_of(session, tenant_id, journey_contact_ids)
        if not waits:
            return [], set()
        # One read for the batch; resolve_waits keeps, per wait, only its own event and what
        # happened since that contact entered it.
        found = events_db.events_since(
            session,
            tenant_id,
            [w.contact_id for w in waits],
            [str(w.config.get("event")) for w in waits if isinstance(w.config, dict)],
            min(w.entered_at for w in waits),
        )
    if not found:
        return [], set()
    return resolve_waits(tenant_id, waits, found)
