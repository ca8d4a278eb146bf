"""The seed's "before" executeNode, ported honestly to this stack: the baseline of the benchmark.

What the seed describes, written as someone would have written it with the SQLAlchemy ORM:

- the journey contact, its journey and its contact loaded as full ORM objects (one joined SELECT,
  as TypeORM's findOne with relations would do), locked so redelivered messages stay harmless;
- the tenant read from the database on every step (session.get: a new session, an empty
  identity map, so a SELECT each time) and the node read from the database on every step;
- two separate execution lookups (the seed's two findOne calls): this node's open execution and
  the contact's previous execution;
- loop detection loading the last executions of the node as full rows;
- writes through the unit of work: the execution, the message, the contact's attributes and the
  journey contact, flushed at commit.

It makes the same decisions (the product's pure node handlers) and leaves the same rows as
tasks.engine.StepEngine: execution rows, messages, attributes, the next step, step_seq and due_at,
so the comparison is of the data access only. Nothing here is slowed on purpose. Webhook nodes
are out of scope (the bench journey has none).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import shared_task
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.clock import seconds_from_now
from db.engine import transaction
from db.models import Contact, Journey, JourneyContact, JourneyNode, JourneyNodeExecution, Message
from db.models import Tenant as TenantModel
from db.statuses import (
    ContactStatus,
    ExecutionStatus,
    JourneyStatus,
    MessageDirection,
    MessageStatus,
    TenantStatus,
)
from tasks import names
from tasks.arguments import check_kwargs, optional_step, uuid_arg
from tasks.base import JourneyTask, publish
from tasks.engine import Followup
from tasks.errors import PermanentError, UnknownEntity
from tasks.node_config import parse_node_config
from tasks.nodes import ContactView, decide
from tasks.settings import EngineSettings, engine_settings

NAIVE_EXECUTE_NODE = "bench.naive_execute_node"


@dataclass(frozen=True)
class StepCommand:
    """One contact's step, as the original per-contact engine took it."""

    tenant_id: uuid.UUID
    journey_contact_id: uuid.UUID
    node_id: uuid.UUID
    step: int | None = None


@dataclass
class StepOutcome:
    """What one contact's step did (the original engine's shape, kept for the bench)."""

    outcome: str  # executed | duplicate | held | finished | failed
    detail: str = ""
    journey_id: str | None = None
    node_type: str | None = None
    execution_status: str | None = None
    contact_status: str | None = None
    followups: list[Followup] = field(default_factory=list)


RUNNABLE = (ContactStatus.ACTIVE.value, ContactStatus.WAITING.value)
JNE = JourneyNodeExecution

step_log = logging.getLogger("journey_worker.steps")


def naive_step_kwargs(tenant_id: Any, journey_contact_id: Any, node_id: Any, step: int) -> dict:
    return {
        "tenant_id": str(tenant_id),
        "journey_contact_id": str(journey_contact_id),
        "node_id": str(node_id),
        "step": step,
    }


class NaiveStepRunner:
    def __init__(self, session: Session, settings: EngineSettings) -> None:
        self.session = session
        self.settings = settings

    def run(self, cmd: StepCommand) -> StepOutcome:
        session = self.session
        row = session.execute(
            select(JourneyContact, Journey, Contact)
            .join(Journey, Journey.id == JourneyContact.journey_id)
            .join(Contact, Contact.id == JourneyContact.contact_id)
            .where(
                JourneyContact.id == cmd.journey_contact_id,
                JourneyContact.tenant_id == cmd.tenant_id,
            )
            .with_for_update(of=JourneyContact)
        ).one_or_none()
        if row is None:
            raise UnknownEntity("journey_contact", cmd.journey_contact_id)
        jc, journey, contact = row.tuple()
        journey_id = str(jc.journey_id)
        now = datetime.now(UTC)

        if jc.status not in RUNNABLE:
            return StepOutcome("duplicate", f"journey contact is {jc.status}", journey_id)
        if cmd.step is not None and cmd.step != jc.step_seq:
            return StepOutcome("duplicate", f"step {cmd.step} is not {jc.step_seq}", journey_id)
        if jc.current_node_id != cmd.node_id:
            return StepOutcome("duplicate", "node is not the current node", journey_id)
        if jc.status == ContactStatus.WAITING and jc.due_at and jc.due_at > now:
            return StepOutcome("duplicate", "wait is not due yet", journey_id)

        # getTenantById: from the database, every time.
        tenant = session.get(TenantModel, cmd.tenant_id)
        if tenant is None or tenant.status != TenantStatus.ACTIVE:
            return self._hold(jc, "tenant_suspended")
        if journey.status == JourneyStatus.ARCHIVED:
            return self._end(jc, ContactStatus.EXITED, "journey_archived", advance=False)
        if journey.status != JourneyStatus.ACTIVE:
            return self._hold(jc, f"journey_{journey.status.lower()}")
        if jc.step_seq >= self.settings.max_steps:
            return self._end(jc, ContactStatus.FAILED, "step_limit_exceeded", advance=False)

        # journeyNodeRepository.findOne: from the database, every time.
        node = session.scalars(
            select(JourneyNode).where(
                JourneyNode.id == jc.current_node_id,
                JourneyNode.journey_id == jc.journey_id,
                JourneyNode.tenant_id == cmd.tenant_id,
            )
        ).first()
        if node is None:
            return self._end(
                jc, ContactStatus.FAILED, f"node_not_found: {jc.current_node_id}", advance=False
            )

        # findOne #1: this node's open execution for the journey contact.
        execution = session.scalars(
            select(JNE)
            .where(
                JNE.journey_contact_id == jc.id,
                JNE.node_id == node.id,
                JNE.tenant_id == cmd.tenant_id,
                JNE.status.in_([ExecutionStatus.PENDING.value, ExecutionStatus.RUNNING.value]),
            )
            .order_by(JNE.created_at.desc())
            .limit(1)
        ).first()
        # findOne #2: the contact's previous execution.
        previous = session.scalars(
            select(JNE)
            .where(
                JNE.journey_contact_id == jc.id,
                JNE.tenant_id == cmd.tenant_id,
                JNE.status != ExecutionStatus.PENDING.value,
            )
            .order_by(JNE.created_at.desc(), JNE.executed_at.desc())
            .limit(1)
        ).first()
        # Loop detection: the node's last executions, full rows.
        recent = session.scalars(
            select(JNE)
            .where(
                JNE.node_id == node.id,
                JNE.journey_contact_id == jc.id,
                JNE.tenant_id == cmd.tenant_id,
            )
            .order_by(JNE.executed_at.desc())
            .limit(self.settings.loop_repeats)
        ).all()
        times = [e.executed_at for e in recent if e.executed_at is not None]
        window_start = now - timedelta(seconds=self.settings.loop_window_seconds)
        if len(times) >= self.settings.loop_repeats and min(times) >= window_start:
            return self._fail_node(jc, node, execution, "loop_detected")

        view = ContactView(
            id=contact.id,
            phone=contact.phone,
            email=contact.email,
            attributes=dict(contact.attributes or {}),
            opted_out=contact.opted_out_at is not None and contact.opted_out_at <= now,
        )
        try:
            config = parse_node_config(node.type, node.config)
            decision = decide(
                node.type,
                config,
                node_id=node.id,
                next_node_id=node.next_node_id,
                contact=view,
                db_now=now,
            )
            if decision.webhook is not None:
                raise PermanentError("webhook nodes are not part of the naive baseline")
        except PermanentError as exc:
            return self._fail_node(jc, node, execution, exc.reason)

        if execution is None:
            execution = JNE(
                id=uuid.uuid4(),
                tenant_id=cmd.tenant_id,
                journey_contact_id=jc.id,
                node_id=node.id,
            )
            session.add(execution)
        execution.status = decision.execution_status.value
        execution.error = None
        execution.result = decision.result
        execution.executed_at = func.now()
        execution.step_seq = jc.step_seq

        outcome = StepOutcome(
            "executed",
            f"previous={previous.node_id if previous else None}",
            journey_id,
            node.type,
            decision.execution_status,
        )
        if decision.sms_body is not None:
            message = Message(
                id=uuid.uuid4(),
                tenant_id=cmd.tenant_id,
                contact_id=contact.id,
                journey_node_execution_id=execution.id,
                direction=MessageDirection.OUTBOUND.value,
                body=decision.sms_body,
                status=MessageStatus.QUEUED.value,
            )
            session.add(message)
            outcome.followups.append(
                Followup(
                    names.DELIVER_MESSAGE,
                    {"tenant_id": str(cmd.tenant_id), "message_id": str(message.id)},
                )
            )
        if decision.attribute_updates:
            contact.attributes = {**(contact.attributes or {}), **decision.attribute_updates}
            contact.updated_at = func.now()

        step = jc.step_seq + 1
        next_node = decision.next_node_id
        jc.step_seq = step
        jc.status_reason = decision.terminal_reason
        jc.redispatch_count = 0
        jc.updated_at = func.now()
        if decision.terminal_status is not None or next_node is None:
            jc.status = (decision.terminal_status or ContactStatus.COMPLETED).value
            jc.current_node_id = None
            jc.due_at = None
            jc.completed_at = func.now()
        elif decision.wake_at is not None:
            jc.status = ContactStatus.WAITING.value
            jc.current_node_id = next_node
            jc.due_at = decision.wake_at
            jc.completed_at = None
        else:
            jc.status = ContactStatus.ACTIVE.value
            jc.current_node_id = next_node
            jc.due_at = seconds_from_now(self.settings.redispatch_grace_seconds)
            jc.completed_at = None
            outcome.followups.append(
                Followup(
                    NAIVE_EXECUTE_NODE,
                    naive_step_kwargs(cmd.tenant_id, jc.id, next_node, step),
                )
            )
        outcome.contact_status = ContactStatus(jc.status)
        return outcome

    def _hold(self, jc: JourneyContact, reason: str) -> StepOutcome:
        jc.status = ContactStatus.PAUSED.value
        jc.status_reason = reason
        jc.due_at = None
        jc.redispatch_count = 0
        jc.updated_at = func.now()
        return StepOutcome("held", reason, str(jc.journey_id), contact_status=ContactStatus.PAUSED)

    def _end(
        self, jc: JourneyContact, status: ContactStatus, reason: str, *, advance: bool
    ) -> StepOutcome:
        jc.status = status.value
        jc.status_reason = reason
        jc.step_seq = jc.step_seq + (1 if advance else 0)
        jc.due_at = None
        jc.completed_at = func.now()
        jc.redispatch_count = 0
        jc.updated_at = func.now()
        kind = "failed" if status == ContactStatus.FAILED else "finished"
        return StepOutcome(kind, reason, str(jc.journey_id), contact_status=status)

    def _fail_node(
        self,
        jc: JourneyContact,
        node: JourneyNode,
        execution: JourneyNodeExecution | None,
        reason: str,
    ) -> StepOutcome:
        if execution is None:
            execution = JNE(
                id=uuid.uuid4(),
                tenant_id=jc.tenant_id,
                journey_contact_id=jc.id,
                node_id=node.id,
            )
            self.session.add(execution)
        execution.status = ExecutionStatus.FAILED.value
        execution.error = reason
        execution.result = {}
        execution.executed_at = func.now()
        execution.step_seq = jc.step_seq
        outcome = self._end(jc, ContactStatus.FAILED, reason, advance=True)
        outcome.node_type = node.type
        outcome.execution_status = ExecutionStatus.FAILED
        return outcome


def command_from_kwargs(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> StepCommand:
    check_kwargs(names.EXECUTE_NODE, args, kwargs)
    return StepCommand(
        tenant_id=uuid_arg(kwargs, "tenant_id"),
        journey_contact_id=uuid_arg(kwargs, "journey_contact_id"),
        node_id=uuid_arg(kwargs, "node_id"),
        step=optional_step(kwargs),
    )


@shared_task(bind=True, base=JourneyTask, name=NAIVE_EXECUTE_NODE)
def naive_execute_node(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The naive step as a task: one transaction, publish after commit, one log line."""
    cmd = command_from_kwargs(args, kwargs)
    started = time.perf_counter()
    with transaction() as session:
        outcome = NaiveStepRunner(session, engine_settings()).run(cmd)
    publish(self.app, outcome.followups)
    duration = time.perf_counter() - started
    step_log.info(
        "step %s tenant_id=%s journey_id=%s journey_contact_id=%s node_id=%s type=%s "
        "status=%s contact=%s detail=%s duration_ms=%.1f task_id=%s",
        outcome.outcome,
        cmd.tenant_id,
        outcome.journey_id,
        cmd.journey_contact_id,
        cmd.node_id,
        outcome.node_type or "none",
        outcome.execution_status,
        outcome.contact_status,
        outcome.detail,
        duration * 1000,
        self.request.id,
    )
    return {"outcome": outcome.outcome, "detail": outcome.detail}
