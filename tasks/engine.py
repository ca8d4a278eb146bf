"""Executing one step of one journey contact: the seed's executeNode, done right.

Two statements (db/step_store.py): read everything the step needs, decide in plain Python, then
claim the step and write the execution, the message and the next state in one atomic statement
that does nothing if another worker took the step first. What must happen after that commit
(publishing the next step, handing a message to delivery) is returned as followups, never done
here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from db.statuses import ContactStatus, ExecutionStatus, JourneyStatus, TenantStatus
from db.step_store import ExecutionWrite, StepStore, StepWrite
from tasks import names
from tasks.errors import PermanentError, UnknownEntity
from tasks.http import HttpEgress, webhook_egress
from tasks.lookups import JourneyReader, NodeRecord
from tasks.node_config import parse_node_config
from tasks.nodes import ContactView, NodeDecision, decide
from tasks.settings import EngineSettings

RUNNABLE = (ContactStatus.ACTIVE.value, ContactStatus.WAITING.value)


@dataclass(frozen=True)
class StepCommand:
    tenant_id: uuid.UUID
    journey_contact_id: uuid.UUID
    node_id: uuid.UUID
    # The worker's own messages say which step they are for; upstream's may not.
    step: int | None = None


@dataclass(frozen=True)
class Followup:
    task_name: str
    kwargs: dict[str, Any]
    queue: str | None = None  # None: the task's default routing


@dataclass
class StepOutcome:
    """What happened, for the log line, the metrics and the caller's after-commit work."""

    outcome: str  # executed | duplicate | held | finished | failed
    detail: str = ""
    journey_id: str | None = None
    node_type: str | None = None
    execution_status: str | None = None
    contact_status: str | None = None
    followups: list[Followup] = field(default_factory=list)


def execute_step_kwargs(tenant_id: Any, journey_contact_id: Any, node_id: Any, step: int) -> dict:
    return {
        "tenant_id": str(tenant_id),
        "journey_contact_id": str(journey_contact_id),
        "node_id": str(node_id),
        "step": step,
    }


class StepRunner:
    def __init__(
        self,
        store: StepStore,
        reader: JourneyReader,
        settings: EngineSettings,
        http: Callable[..., Any] | None = None,
    ) -> None:
        self.store = store
        self.reader = reader
        self.settings = settings
        # The webhook client: tenants' URLs reach public addresses only (tasks/http.py).
        self._http = http

    def run(self, cmd: StepCommand) -> StepOutcome:
        self.claimed = True
        outcome = self._run(cmd)
        if not self.claimed:
            # The conditional write found the step already taken: nothing was written, and
            # nothing may be published.
            return StepOutcome("duplicate", "another worker took this step", outcome.journey_id)
        return outcome

    def _run(self, cmd: StepCommand) -> StepOutcome:
        loaded = self.store.load(cmd.tenant_id, cmd.journey_contact_id, self.settings.loop_repeats)
        if loaded is None:
            raise UnknownEntity("journey_contact", cmd.journey_contact_id)
        state, recent = loaded.state, loaded.recent
        self.state = state
        journey_id = str(state.journey_id)

        if state.status not in RUNNABLE:
            return StepOutcome("duplicate", f"journey contact is {state.status}", journey_id)
        if cmd.step is not None and cmd.step != state.step_seq:
            return StepOutcome(
                "duplicate", f"step {cmd.step} is not the current step {state.step_seq}", journey_id
            )
        if state.current_node_id != cmd.node_id:
            return StepOutcome("duplicate", "node is not the current node", journey_id)
        if state.status == ContactStatus.WAITING and state.due_at and state.due_at > state.db_now:
            return StepOutcome("duplicate", "wait is not due yet", journey_id)

        # Gates read from the database in the step's read, never from the cache.
        if state.tenant_status != TenantStatus.ACTIVE:
            return self._hold("tenant_suspended")
        if state.journey_status == JourneyStatus.ARCHIVED:
            return self._finish(ContactStatus.EXITED, "journey_archived")
        if state.journey_status != JourneyStatus.ACTIVE:
            return self._hold(f"journey_{state.journey_status.lower()}")
        if state.step_seq >= self.settings.max_steps:
            return self._fail("step_limit_exceeded", None)

        node, _tenant = self.reader.node_and_tenant(
            self.store.connection, state.tenant_id, state.journey_id, state.current_node_id
        )
        if node is None or node.journey_id != journey_id:
            return self._fail(f"node_not_found: {state.current_node_id}", None)

        if self._loop_detected(loaded.loop_times):
            return self._fail("loop_detected", node)
        pending = next(
            (
                e.id
                for e in recent
                if e.node_id == state.current_node_id
                and e.status in (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
                and e.step_seq in (None, state.step_seq)
            ),
            None,
        )
        previous = next((e for e in recent if e.status != ExecutionStatus.PENDING), None)

        contact = ContactView(
            id=str(state.contact_id),
            phone=state.phone,
            email=state.email,
            attributes=dict(state.attributes or {}),
            opted_out=state.opted_out_at is not None and state.opted_out_at <= state.db_now,
        )
        try:
            config = parse_node_config(node.type, node.config)
            decision = decide(
                node.type,
                config,
                node_id=node.id,
                next_node_id=node.next_node_id,
                contact=contact,
                db_now=state.db_now,
            )
        except PermanentError as exc:
            return self._fail(exc.reason, node, pending)
        if decision.webhook is None:
            return self._apply(decision, node, pending)
        try:
            # A URL naming a forbidden IP outright fails here, before any lock or connection;
            # names are checked where it counts, on the addresses actually connected to.
            self._webhook_egress().check_literal(decision.webhook.url)
        except PermanentError as exc:
            return self._fail(exc.reason, node, pending)
        # The one outside effect: serialize it per journey contact, so a duplicate message
        # running at the same moment waits and then finds the step taken instead of calling
        # the webhook a second time (the Idempotency-Key covers what a crash may repeat).
        with self.store.exclusive(state.id, state.step_seq) as still_current:
            if not still_current:
                return StepOutcome("duplicate", "another worker took this step", journey_id)
            try:
                decision = self._call_webhook(
                    decision, node, previous.node_id if previous else None
                )
            except PermanentError as exc:
                return self._fail(exc.reason, node, pending)
            return self._apply(decision, node, pending)

    # --- outcomes ----------------------------------------------------------------------

    def _loop_detected(self, times: list[datetime]) -> bool:
        """The last loop_repeats runs of this node all fell within the window: this would be one
        more. A weekly loop through a wait never trips it; a tight loop does, on its 4th run."""
        window_start = self.state.db_now - timedelta(seconds=self.settings.loop_window_seconds)
        limit = self.settings.loop_repeats
        return len(times) >= limit and min(times[:limit]) >= window_start

    def _call_webhook(
        self, decision: NodeDecision, node: NodeRecord, previous_node_id: uuid.UUID | None
    ) -> NodeDecision:
        state, call = self.state, decision.webhook
        assert call is not None
        payload = {
            "tenant_id": str(state.tenant_id),
            "journey_id": str(state.journey_id),
            "journey_contact_id": str(state.id),
            "contact_id": str(state.contact_id),
            "node_id": node.id,
            "step": state.step_seq,
            "previous_node_id": str(previous_node_id) if previous_node_id else None,
        }
        # The step identifies the call: a re-run of this step repeats the same key.
        http = self._http or self._webhook_egress().call_json
        response = http(
            call.url,
            payload,
            method=call.method,
            timeout=call.timeout_seconds,
            idempotency_key=f"{state.id}:{state.step_seq}",
        )
        return NodeDecision(
            next_node_id=decision.next_node_id, result={"http_status": response.status}
        )

    def _webhook_egress(self) -> HttpEgress:
        return webhook_egress(self.settings.webhook_allowed_networks)

    def _write(self, **changes: Any) -> None:
        state = self.state
        fields = {
            "tenant_id": state.tenant_id,
            "journey_contact_id": state.id,
            "contact_id": state.contact_id,
            "step_seq": state.step_seq,
            "current_node_id": state.current_node_id,
            "next_step_seq": state.step_seq,
        }
        self.claimed = self.store.write(StepWrite(**(fields | changes)))

    def _hold(self, reason: str) -> StepOutcome:
        """Keep the contact at this step, sending nothing, until the tenant or journey resumes."""
        self._write(status=ContactStatus.PAUSED, status_reason=reason)
        return StepOutcome(
            "held", reason, str(self.state.journey_id), contact_status=ContactStatus.PAUSED
        )

    def _finish(self, status: ContactStatus, reason: str) -> StepOutcome:
        self._write(status=status, status_reason=reason, completed=True)
        return StepOutcome("finished", reason, str(self.state.journey_id), contact_status=status)

    def _fail(
        self, reason: str, node: NodeRecord | None, pending: uuid.UUID | None = None
    ) -> StepOutcome:
        """FAILED with the reason; the step's execution row says FAILED too when there is a node."""
        execution = None
        if node is not None:
            execution = ExecutionWrite(
                id=pending or uuid.uuid4(),
                existing=pending is not None,
                node_id=self.state.current_node_id,
                status=ExecutionStatus.FAILED,
                error=reason,
                result={},
            )
        self._write(
            status=ContactStatus.FAILED,
            status_reason=reason,
            completed=True,
            next_step_seq=self.state.step_seq + (1 if node else 0),
            execution=execution,
        )
        return StepOutcome(
            "failed",
            reason,
            str(self.state.journey_id),
            node.type if node else None,
            ExecutionStatus.FAILED if node else None,
            ContactStatus.FAILED,
        )

    def _apply(
        self, decision: NodeDecision, node: NodeRecord, pending: uuid.UUID | None
    ) -> StepOutcome:
        state = self.state
        execution = ExecutionWrite(
            id=pending or uuid.uuid4(),
            existing=pending is not None,
            node_id=state.current_node_id,
            status=decision.execution_status,
            error=None,
            result=decision.result,
        )
        outcome = StepOutcome(
            "executed", "", str(state.journey_id), node.type, decision.execution_status
        )
        message_id = uuid.uuid4() if decision.sms_body is not None else None
        if message_id is not None:
            outcome.followups.append(
                Followup(
                    names.DELIVER_MESSAGE,
                    {"tenant_id": str(state.tenant_id), "message_id": str(message_id)},
                )
            )
        next_step = state.step_seq + 1
        next_node = uuid.UUID(decision.next_node_id) if decision.next_node_id else None
        changes: dict[str, Any] = {}
        if decision.terminal_status is not None or next_node is None:
            status = decision.terminal_status or ContactStatus.COMPLETED
            changes = {
                "current_node_id": None,
                "status_reason": decision.terminal_reason,
                "completed": True,
            }
        elif decision.wake_at is not None:
            status = ContactStatus.WAITING
            changes = {"current_node_id": next_node, "due_at": decision.wake_at}
        else:
            status = ContactStatus.ACTIVE
            # Due again after the grace period: if the message published below is lost, the
            # dispatcher publishes this step again.
            changes = {
                "current_node_id": next_node,
                "due_in_seconds": self.settings.redispatch_grace_seconds,
            }
            outcome.followups.append(
                Followup(
                    names.EXECUTE_NODE,
                    execute_step_kwargs(state.tenant_id, state.id, next_node, next_step),
                )
            )
        self._write(
            status=status,
            next_step_seq=next_step,
            execution=execution,
            message_id=message_id,
            message_body=decision.sms_body,
            attribute_updates=decision.attribute_updates,
            **changes,
        )
        outcome.contact_status = status
        return outcome
