"""Delivery tasks: hand QUEUED messages to the SMS provider, a batch per task.

The batch's QUEUED messages are leased in one statement (a message another delivery holds is
skipped, not sent twice), each is handed to the provider (the provider it is committed to is
recorded before the call), and the outcomes are recorded together. A transient fault on some
messages records the rest and raises, so Celery's retry delivers only what is still QUEUED;
the provider sees the message id as Idempotency-Key if a crash repeats a send.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from celery import Celery, shared_task
from sqlalchemy import Connection

from cache import get_cache, get_send_rate_limiter
from db import delivery, inbound, receipts, send_counters
from db.engine import autocommit_connection
from db.statuses import MessageStatus
from tasks import metrics, names
from tasks.arguments import check_kwargs, uuid_arg, uuid_list_arg
from tasks.base import TRANSIENT_ERRORS, JourneyTask
from tasks.delivery import DatabasePins, SlotMissed, provider_from_settings
from tasks.errors import InvalidTenantSettings, PermanentError, TransientError, UnknownEntity
from tasks.lanes import lane_for
from tasks.lookups import JourneyReader
from tasks.policy.settings import parse_tenant_send_policy
from tasks.settings import MAX_BATCH_SIZE, EngineSettings, engine_settings

log = logging.getLogger("journey_worker.delivery")


@shared_task(bind=True, base=JourneyTask, name=names.DELIVER_MESSAGES)
def deliver_messages(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    check_kwargs(names.DELIVER_MESSAGES, args, kwargs)
    tenant_id = uuid_arg(kwargs, "tenant_id")
    message_ids = uuid_list_arg(kwargs, "message_ids", MAX_BATCH_SIZE)
    outcomes = deliver(tenant_id, message_ids, requeue=_requeue(self.app, tenant_id))
    return dict(Counter(r.outcome for r in outcomes))


@shared_task(bind=True, base=JourneyTask, name=names.DELIVER_MESSAGE)
def deliver_message(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One message (kept for messages published before batched delivery, and for upstream
    tools that re-deliver one message)."""
    check_kwargs(names.DELIVER_MESSAGE, args, kwargs)
    tenant_id, message_id = uuid_arg(kwargs, "tenant_id"), uuid_arg(kwargs, "message_id")
    [result] = deliver(tenant_id, [message_id], requeue=_requeue(self.app, tenant_id))
    if result.outcome == "unknown":
        raise UnknownEntity("message", message_id)
    if result.outcome == "duplicate":
        return {"outcome": "duplicate", "status": result.detail}
    if result.outcome == "failed":
        return {"outcome": "failed", "reason": result.detail}
    return {"outcome": result.outcome}


@dataclass(frozen=True)
class MessageOutcome:
    message_id: uuid.UUID
    # sent | failed | retry | deferred (by the send rate) | duplicate (handled) | unknown
    outcome: str
    detail: str = ""


# A deferral this short goes back to the broker as a countdown; a longer one waits in the
# database (messages.deliver_after) for the dispatcher, so a backlog of deferred deliveries
# never sits in the broker (Redis holds countdowns in worker memory).
BROKER_COUNTDOWN_SECONDS = 10.0
Requeue = Callable[[list[uuid.UUID], float], None]


def _requeue(app: Celery, tenant_id: uuid.UUID) -> Requeue:
    def requeue(message_ids: list[uuid.UUID], countdown: float) -> None:
        app.send_task(
            names.DELIVER_MESSAGES,
            kwargs={"tenant_id": str(tenant_id), "message_ids": [str(m) for m in message_ids]},
            countdown=countdown,
            queue=lane_for(
                names.DELIVER_MESSAGES,
                {"message_ids": message_ids},
                engine_settings().bulk_batch_min,
            ),
        )

    return requeue


def deliver(
    tenant_id: uuid.UUID, message_ids: list[uuid.UUID], *, requeue: Requeue | None = None
) -> list[MessageOutcome]:
    """Deliver the batch; returns one outcome per id, in order. Raises the transient error
    (after recording every other outcome) when some messages must be tried again."""
    settings = engine_settings()
    results: list[delivery.DeliveryResult] = []
    outcomes: dict[uuid.UUID, MessageOutcome] = {}
    transient: list[BaseException] = []
    with autocommit_connection() as connection:
        messages = delivery.claim_messages(
            connection, tenant_id, message_ids, settings.delivery_lease_seconds
        )
        claimed = {m.id for m in messages}
        others = [m for m in message_ids if m not in claimed]
        # Not QUEUED (handled already), leased by another delivery right now, or not the
        # tenant's message at all.
        statuses = delivery.message_statuses(connection, tenant_id, others)
        for message_id in others:
            status = statuses.get(message_id)
            outcomes[message_id] = MessageOutcome(
                message_id, "unknown" if status is None else "duplicate", status or ""
            )
        conversations = delivery.ensure_conversations(
            connection, tenant_id, [m.contact_id for m in messages]
        )
        pace = _paced(connection, tenant_id, messages, settings, outcomes, requeue)
        provider = provider_from_settings(settings, DatabasePins(connection))
        missed: list[uuid.UUID] = []
        for message in messages:
            if message.id in outcomes:
                continue  # deferred by the send rate
            conversation_id = message.conversation_id or conversations[message.contact_id]
            failure: str | None = None
            sent = None
            sent_at: datetime | None = None
            if message.opted_out:
                failure = "opted_out"
            else:
                try:
                    # The gate waits for the message's send slot right before the call.
                    sent = provider.send(message, partial(_gate, connection, pace, message))
                    sent_at = pace.passed.get(message.id)
                except SlotMissed:
                    # Too late for its slot (this process was held up): sending it now could
                    # crowd the next slots, so it goes back for a slot of its own.
                    missed.append(message.id)
                    continue
                except PermanentError as exc:
                    failure = exc.reason
                except TRANSIENT_ERRORS as exc:
                    # Left QUEUED, saying why: the task's retry delivers it again, to the
                    # provider it is committed to, with the same key.
                    delivery.note_delivery_failure(connection, message.id, str(exc)[:500])
                    transient.append(exc)
                    outcomes[message.id] = MessageOutcome(
                        message.id, "retry", f"{type(exc).__name__}: {exc}"
                    )
                    continue
            if sent is not None:
                results.append(
                    delivery.DeliveryResult(
                        message.id,
                        MessageStatus.SENT,
                        conversation_id,
                        provider=sent.provider,
                        provider_message_id=sent.provider_message_id,
                        sent_at=sent_at,
                    )
                )
                outcomes[message.id] = MessageOutcome(message.id, "sent")
            else:
                assert failure is not None
                log.error(
                    "sms failed for good tenant_id=%s message_id=%s reason=%s",
                    tenant_id,
                    message.id,
                    failure,
                )
                results.append(
                    delivery.DeliveryResult(
                        message.id, MessageStatus.FAILED, conversation_id, failure
                    )
                )
                outcomes[message.id] = MessageOutcome(message.id, "failed", failure)
        delivery.finish_messages(connection, tenant_id, results)
        # A message the provider refused for good gives its frequency-cap slot back. After the
        # FAILED is recorded: a crash in between costs the contact a slot, never sends one more.
        send_counters.release_sends(
            connection, [r.message_id for r in results if r.status == MessageStatus.FAILED]
        )
        inbound.note_not_sent(
            connection,
            tenant_id,
            [r.message_id for r in results if r.error == inbound.OPTED_OUT],
            inbound.OPTED_OUT,
        )
        # Receipts that came before these provider ids were stored (db/receipts.py).
        receipts.apply_early_receipts(
            connection, tenant_id, [r.message_id for r in results if r.provider_message_id]
        )
        if missed:
            _defer(connection, missed, 0.0, requeue, outcomes)
    for result in results:
        metrics.MESSAGES.labels(result.status).inc()
    retry = [o for o in outcomes.values() if o.outcome == "retry"]
    if len(transient) == 1:
        raise transient[0]
    if retry:
        raise TransientError(
            f"{len(retry)} of {len(messages)} deliveries failed for now "
            f"(first: message {retry[0].message_id}: {retry[0].detail})"
        )
    return [outcomes[m] for m in message_ids]


def _gate(connection: Connection, pace: _Pace, message: delivery.OutboundMessage) -> bool:
    """Right before the provider call: wait for the send slot, then check the opt-out once
    more. The claim checked it, but a batch's last message goes out after the others' calls
    (and any pacing): an opt-out committed meanwhile still stops it."""
    if not pace.wait_for(message.id):
        return False
    if inbound.contact_opted_out(connection, message.contact_id):
        raise PermanentError(inbound.OPTED_OUT)
    return True


@dataclass(frozen=True)
class _Pace:
    """Send slots, as seconds after `reserved_at` (time.monotonic() when they were reserved)."""

    reserved_at: float
    slots: dict[uuid.UUID, float]
    # How late a send may still go at its slot: under the pace's margin (cache/send_rate.py),
    # so a late send never crowds a one-second window past the rate.
    tolerance: float
    passed: dict[uuid.UUID, datetime] = field(default_factory=dict)

    def wait_for(self, message_id: uuid.UUID) -> bool:
        """Sleep until the message's slot; False if the slot has passed by more than the
        tolerance (then it must not be sent now)."""
        slot = self.slots.get(message_id)
        if slot is None:
            return True
        delay = slot - (time.monotonic() - self.reserved_at)
        if delay > 0:
            time.sleep(delay)
            # A loaded machine wakes a sleeper late: judge the slot again after the sleep.
            delay = slot - (time.monotonic() - self.reserved_at)
        if -delay > self.tolerance:
            return False
        # The instant the message went to the provider in its slot: its sent_at.
        self.passed[message_id] = datetime.now(UTC)
        return True


UNPACED = _Pace(0.0, {}, 0.0)
# Slots are 1/(0.95 x rate) apart, so a one-second window holds at most
# floor((1 + tolerance) x 0.95 x rate) + 1 sends: at most the rate for any tolerance under
# 1/0.95 - 1 = 52 ms. 30 ms leaves room for the network between here and the provider.
LATE_SEND_TOLERANCE = 0.03


def _paced(
    connection: Connection,
    tenant_id: uuid.UUID,
    messages: list[delivery.OutboundMessage],
    settings: EngineSettings,
    outcomes: dict[uuid.UUID, MessageOutcome],
    requeue: Requeue | None,
) -> _Pace:
    """With a tenant send rate: reserve a send slot for each message that fits in the horizon,
    and defer the rest, never dropped and never retried in a loop. Without one: send at once.
    Adds the deferred messages to `outcomes`."""
    rate = _send_rate(connection, tenant_id)
    to_send = [m for m in messages if not m.opted_out]
    if rate is None or not to_send:
        return UNPACED
    horizon = settings.send_rate_horizon_seconds
    reservation = get_send_rate_limiter().reserve(str(tenant_id), rate, len(to_send), horizon)
    # Slots count from Redis's clock when it answered; counting from after the answer makes a
    # send late by the reply's way back (the tolerance covers it), never early.
    reserved_at = time.monotonic()
    later = [m.id for m in to_send[len(reservation.offsets) :]]
    if later:
        # They come back when their turn is within the horizon again.
        _defer(connection, later, max(reservation.next_free - horizon, 0.0), requeue, outcomes)
    return _Pace(
        reserved_at,
        dict(zip((m.id for m in to_send), reservation.offsets, strict=False)),
        tolerance=LATE_SEND_TOLERANCE,
    )


def _defer(
    connection: Connection,
    message_ids: list[uuid.UUID],
    wait: float,
    requeue: Requeue | None,
    outcomes: dict[uuid.UUID, MessageOutcome],
) -> None:
    """Back to the broker with a countdown when the wait is short; else to the database, where
    the dispatcher picks them up (messages.deliver_after)."""
    if requeue is not None and wait <= BROKER_COUNTDOWN_SECONDS:
        delivery.defer_messages(connection, message_ids, None)
        requeue(message_ids, wait)
    else:
        delivery.defer_messages(connection, message_ids, max(wait, 0.1))
    metrics.SEND_RATE_DEFERRED.inc(len(message_ids))
    for message_id in message_ids:
        outcomes[message_id] = MessageOutcome(message_id, "deferred", f"{wait:.1f}s")


def _send_rate(connection: Connection, tenant_id: uuid.UUID) -> float | None:
    """The tenant's send_rate_per_second, through the cache; None when it sets none. A malformed
    policy is logged and not enforced: deliveries never stop for it."""
    tenant = JourneyReader(get_cache()).tenant(connection, tenant_id)
    if tenant is None:
        return None
    try:
        return parse_tenant_send_policy(tenant.settings).send_rate_per_second
    except InvalidTenantSettings as exc:
        log.warning("tenant_id=%s send rate not enforced: %s", tenant_id, exc.reason)
        return None
