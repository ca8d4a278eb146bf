"""Inbound SMS (journeys.inbound_message): record the message on its contact, honour STOP and
START keywords, and turn the reply into the contact event `sms_reply`.

One transaction records the message (unique per tenant and provider_message_id, so a
redelivered message changes nothing), sets or clears contacts.opted_out_at with an audit row
naming the message, fails the contact's QUEUED sends that no delivery holds (reason
'opted_out', also on their executions) and records the `sms_reply` events. From that commit
on, no SMS goes to the contact: a delivery's claim re-checks the opt-out (db/delivery.py).
After the commit, the events end the waits they match (tasks/contact_events.py).

A phone the tenant does not know is recorded without a contact and logged: not an error, so
never retried.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import shared_task

from db import contact_events as events_db
from db import inbound as inbound_db
from db.contact_events import StoredEvent
from db.engine import transaction
from db.statuses import ConsentAction
from tasks import names
from tasks.arguments import check_kwargs, string_arg, uuid_arg
from tasks.base import JourneyTask, publish
from tasks.contact_events import match_event
from tasks.engine import Followup
from tasks.errors import InvalidTenantSettings, UnknownEntity
from tasks.policy.settings import parse_tenant_send_policy
from tasks.sms.keywords import InboundKeyword, classify_inbound
from tasks.sms.phones import normalize_e164

log = logging.getLogger("journey_worker.inbound")

SMS_REPLY_EVENT = "sms_reply"
MAX_PHONE = 32
MAX_BODY = 10_000
MAX_PROVIDER_MESSAGE_ID = 255


@dataclass(frozen=True)
class InboundSms:
    tenant_id: uuid.UUID
    from_phone: str
    to_phone: str
    body: str
    provider_message_id: str


@dataclass
class InboundOutcome:
    message_id: uuid.UUID
    duplicate: bool
    keyword: InboundKeyword | None
    contact_ids: list[uuid.UUID]
    opted_out: list[uuid.UUID] = field(default_factory=list)
    opted_in: list[uuid.UUID] = field(default_factory=list)
    cancelled_messages: list[uuid.UUID] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    followups: list[Followup] = field(default_factory=list)
    matched_waits: int = 0


def parse_inbound(kwargs: dict[str, Any]) -> InboundSms:
    return InboundSms(
        tenant_id=uuid_arg(kwargs, "tenant_id"),
        from_phone=string_arg(kwargs, "from_phone", MAX_PHONE),
        to_phone=string_arg(kwargs, "to_phone", MAX_PHONE),
        body=string_arg(kwargs, "body", MAX_BODY, allow_empty=True),
        provider_message_id=string_arg(kwargs, "provider_message_id", MAX_PROVIDER_MESSAGE_ID),
    )


@shared_task(bind=True, base=JourneyTask, name=names.INBOUND_MESSAGE)
def inbound_message(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    check_kwargs(names.INBOUND_MESSAGE, args, kwargs)
    outcome = handle_inbound(parse_inbound(kwargs))
    publish(self.app, outcome.followups)
    return {
        "message_id": str(outcome.message_id),
        "duplicate": outcome.duplicate,
        "keyword": outcome.keyword.value if outcome.keyword else None,
        "contacts": len(outcome.contact_ids),
        "opted_out": len(outcome.opted_out),
        "opted_in": len(outcome.opted_in),
        "cancelled_messages": len(outcome.cancelled_messages),
        "matched_waits": outcome.matched_waits,
    }


def tenant_keywords(settings: dict[str, Any], tenant_id: uuid.UUID) -> tuple[tuple[str, ...], ...]:
    """The tenant's extra opt-out and opt-in keywords. A malformed policy elsewhere in the
    settings never stops an opt-out: only the keyword lists are read again on their own."""
    try:
        policy = parse_tenant_send_policy(settings)
    except InvalidTenantSettings:
        keys = {k: settings[k] for k in ("opt_out_keywords", "opt_in_keywords") if k in settings}
        try:
            policy = parse_tenant_send_policy(keys)
        except InvalidTenantSettings as exc:
            log.warning("tenant_id=%s keywords ignored: %s", tenant_id, exc.reason)
            return (), ()
    return policy.opt_out_keywords, policy.opt_in_keywords


def handle_inbound(sms: InboundSms) -> InboundOutcome:
    tenant_id = sms.tenant_id
    with transaction() as session:
        settings = inbound_db.tenant_settings(session, tenant_id)
        if settings is None:
            raise UnknownEntity("tenant", tenant_id)
        e164 = normalize_e164(sms.from_phone)
        phones = [p for p in (e164, sms.from_phone.strip()) if p]
        contacts = inbound_db.contacts_with_phone(session, tenant_id, phones)
        recorded = inbound_db.record_inbound_message(
            session,
            tenant_id=tenant_id,
            contact_id=contacts[0] if contacts else None,
            from_phone=e164 or sms.from_phone,
            to_phone=normalize_e164(sms.to_phone) or sms.to_phone,
            body=sms.body,
            provider_message_id=sms.provider_message_id,
        )
        opt_outs, opt_ins = tenant_keywords(settings, tenant_id)
        keyword = classify_inbound(sms.body, opt_outs, opt_ins)
        outcome = InboundOutcome(recorded.message_id, not recorded.created, keyword, contacts)
        if not contacts:
            log.warning(
                "inbound sms from an unknown phone tenant_id=%s message_id=%s keyword=%s: "
                "recorded without a contact",
                tenant_id,
                recorded.message_id,
                keyword,
            )
            return outcome
        if recorded.created and keyword == InboundKeyword.OPT_OUT:
            outcome.opted_out = inbound_db.change_consent(
                session,
                tenant_id,
                contacts,
                ConsentAction.OPT_OUT,
                recorded.message_id,
                sms.body.strip(),
            )
            outcome.cancelled_messages = inbound_db.cancel_queued_for_contacts(
                session, tenant_id, contacts
            )
        elif recorded.created and keyword == InboundKeyword.OPT_IN:
            outcome.opted_in = inbound_db.change_consent(
                session,
                tenant_id,
                contacts,
                ConsentAction.OPT_IN,
                recorded.message_id,
                sms.body.strip(),
            )
        # Recorded again on a redelivery (the event_id makes it the same event), so that a
        # crash between this commit and the matching below loses no match.
        properties = {"body": sms.body, "message_id": str(recorded.message_id)}
        if keyword is not None:
            properties["keyword"] = keyword.value
        outcome.events = [
            events_db.record_event(
                session,
                tenant_id=tenant_id,
                contact_id=contact_id,
                name=SMS_REPLY_EVENT,
                properties=properties,
                occurred_at=None,
                event_id=f"{SMS_REPLY_EVENT}:{sms.provider_message_id}:{contact_id}",
            )
            for contact_id in contacts
        ]
    for event in outcome.events:
        followups, matched = match_event(tenant_id, event)
        outcome.followups += followups
        outcome.matched_waits += len(matched)
    log.info(
        "inbound sms tenant_id=%s message_id=%s duplicate=%s keyword=%s contacts=%d "
        "opted_out=%d opted_in=%d cancelled=%d matched_waits=%d",
        tenant_id,
        outcome.message_id,
        outcome.duplicate,
        keyword,
        len(contacts),
        len(outcome.opted_out),
        len(outcome.opted_in),
        len(outcome.cancelled_messages),
        outcome.matched_waits,
    )
    return outcome
