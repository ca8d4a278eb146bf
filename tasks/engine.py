"""Executing one journey node for a batch of journey contacts: the seed's executeNode, done
right and done set-based. A single contact is a batch of one: same statements, same decisions.

Two statements (db/step_store.py): read everything the batch needs, decide each contact in
plain Python (tasks/nodes.py), then claim every step and write executions, messages and the next
states in one atomic statement that skips, row by row, any step another worker took first. What
must happen after that commit (publishing the next steps, handing messages to delivery) is
returned as followups, grouped so a blast stays batched, never done here.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import Connection

from db import send_counters
from db.redirects import journey_redirects
from db.statuses import ContactStatus, ExecutionStatus, JourneyStatus, TenantStatus
from db.step_store import (
    ExecutionWrite,
    LoadedStep,
    MessageWrite,
    StepState,
    StepStore,
    StepWrite,
    step_uuid,
)
from tasks import names
from tasks.errors import PermanentError, UnknownEntity
from tasks.http import HttpEgress, webhook_egress
from tasks.journey_edits import NODE_NOT_FOUND, NODE_REMOVED, REDIRECTED, reroute
from tasks.lookups import JourneyReader, NodeRecord
from tasks.node_config import parse_node_config
from tasks.nodes import ContactView, NodeDecision, decide
from tasks.policy.send_gate import HeldSend
from tasks.send_policy import INVALID_TENANT_SETTINGS, BatchSendPolicy, CapRequest
from tasks.settings import EngineSettings

RUNNABLE = (ContactStatus.ACTIVE.value, ContactStatus.WAITING.value)


@dataclass(frozen=True)
class StepRef:
    journey_contact_id: uuid.UUID
    # The worker's own messages say which step they are for; upstream's first may not.
    step: int | None = None


@dataclass(frozen=True)
class BatchCommand:
    tenant_id: uuid.UUID
    node_id: uuid.UUID
    steps: tuple[StepRef, ...]
    # Upstream's execute_node names one journey contact, and an unknown id is a bad message.
    # The worker's own batches may name journey contacts deleted since (a journey deleted):
    # those are skipped and counted, and the rest of the batch proceeds.
    unknown_is_error: bool = False


@dataclass(frozen=True)
class Followup:
    task_name: str
    kwargs: dict[str, Any]
    queue: str | None = None  # None: the task's default routing


@dataclass(frozen=True)
class ContactOutcome:
    journey_contact_id: uuid.UUID
    # executed | duplicate | held | finished | failed | unknown | fanned_out
    outcome: str
    detail: str = ""
    execution_status: str | None = None
    contact_status: str | None = None
    # (rule, action) when the tenant's send policy held the send: ("quiet_hours", "deferred").
    policy: tuple[str, str] | None = None


@dataclass
class BatchOutcome:
    """What happened to each contact, for the log line, the metrics and the after-commit work."""

    tenant_id: uuid.UUID
    node_id: uuid.UUID
    journey_id: uuid.UUID | None = None
    node_type: str | None = None
    contacts: list[ContactOutcome] = field(default_factory=list)
    followups: list[Followup] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(c.outcome for c in self.contacts)


@dataclass(frozen=True)
class _JourneyNow:
    """The journey's live nodes and redirect map, read from the database (not the cache: an
    edit is exactly when the cache may lag) for contacts whose node is gone."""

    nodes: dict[uuid.UUID, NodeRecord]
    redirects: dict[uuid.UUID, uuid.UUID | None]

    @classmethod
    def read(cls, connection: Connection, state: StepState) -> _JourneyNow:
        return cls(
            JourneyReader.load_nodes(connection, state.tenant_id, state.journey_id),
            journey_redirects(connection, state.tenant_id, state.journey_id),
        )


@dataclass(frozen=True)
class _Capped:
    """A send waiting for the frequency cap's verdict, taken in the write's transaction."""

    state: StepState
    decision: NodeDecision
    node: NodeRecord
    pending: uuid.UUID | None


@dataclass(frozen=True)
class _Planned:
    """One contact's write, what it means if its claim holds, and what to publish then."""

    write: StepWrite
    outcome: ContactOutcome
    next_node_id: uuid.UUID | None = None  # publish the next step (ACTIVE at that node)


def execute_batch_kwargs(
    tenant_id: uuid.UUID, node_id: uuid.UUID, steps: Iterable[tuple[uuid.UUID, int]]
) -> dict[str, Any]:
    """The worker's own batch message: ids and step numbers only, never contact data."""
    return {
        "tenant_id": str(tenant_id),
        "node_id": str(node_id),
        "journey_contacts": [[str(jc), step] for jc, step in steps],
    }


def execute_node_kwargs(
    tenant_id: uuid.UUID, journey_contact_id: uuid.UUID, node_id: uuid.UUID, step: int
) -> dict[str, Any]:
    return {
        "tenant_id": str(tenant_id),
        "journey_contact_id": str(journey_contact_id),
        "node_id": str(node_id),
        "step": step,
    }


def chunked(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StepEngine:
    """Runs one node for a batch. Keeps no per-batch state on itself: each run is a function
    of the command, the store's rows and the settings."""

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

    def run(self, cmd: BatchCommand) -> BatchOutcome:
        outcome = BatchOutcome(cmd.tenant_id, cmd.node_id)
        refs: list[StepRef] = []
        seen: set[uuid.UUID] = set()
        for ref in cmd.steps:
            if ref.journey_contact_id in seen:
                outcome.contacts.append(
                    ContactOutcome(ref.journey_contact_id, "duplicate", "named twice in the batch")
                )
            else:
                seen.add(ref.journey_contact_id)
                refs.append(ref)
        loaded = self.store.load(
            cmd.tenant_id, [r.journey_contact_id for r in refs], self.settings.loop_repeats
        )
        candidates: list[LoadedStep] = []
        for ref in refs:
            step = loaded.get(ref.journey_contact_id)
            if step is None:
                if cmd.unknown_is_error:
                    raise UnknownEntity("journey_contact", ref.journey_contact_id)
                outcome.contacts.append(
                    ContactOutcome(ref.journey_contact_id, "unknown", "unknown journey contact")
                )
                continue
            outcome.journey_id = step.state.journey_id
            why = _not_this_step(step.state, ref, cmd.node_id)
            if why:
                outcome.contacts.append(ContactOutcome(step.state.id, "duplicate", why))
            else:
                candidates.append(step)

        planned: list[_Planned] = []
        at_node: list[LoadedStep] = []
        for step in candidates:
            gated = self._gate(step.state)
            if gated is not None:
                planned.append(gated)
            else:
                at_node.append(step)
        written: list[_Planned] = []
        capped: list[_Capped] = []
        if at_node:
            node, tenant = self.reader.node_and_tenant(
                self.store.connection, cmd.tenant_id, at_node[0].state.journey_id, cmd.node_id
            )
            outcome.node_type = node.type if node else None
            # Only sends are under the policy: other nodes skip parsing the tenant's settings.
            policy = BatchSendPolicy.for_tenant(
                tenant if node is not None and node.type == "send_sms" else None
            )
            planned += self._at_node(node, at_node, outcome, written, policy, capped)
        if capped:
            claimed = self._write_capped(cmd.tenant_id, planned, capped, policy)
        else:
            claimed = self.store.write(cmd.tenant_id, [p.write for p in planned])
        self._settle(planned, claimed, outcome)
        self._settle(written, {p.write.journey_contact_id for p in written}, outcome)
        return outcome

    # --- deciding ----------------------------------------------------------------------

    def _gate(self, state: StepState) -> _Planned | None:
        """Gates read from the database in the batch's read, never from the cache."""
        if state.tenant_status != TenantStatus.ACTIVE:
            return _hold(state, "tenant_suspended")
        if state.journey_status == JourneyStatus.ARCHIVED:
            return _finish(state, ContactStatus.EXITED, "journey_archived")
        if state.journey_status != JourneyStatus.ACTIVE:
            return _hold(state, f"journey_{state.journey_status.lower()}")
        if state.step_seq >= self.settings.max_steps:
            return _fail(state, "step_limit_exceeded", None)
        return None

    def _at_node(
        self,
        node: NodeRecord | None,
        steps: list[LoadedStep],
        outcome: BatchOutcome,
        written: list[_Planned],
        policy: BatchSendPolicy,
        capped: list[_Capped],
    ) -> list[_Planned]:
        """Decide each contact at the node. Webhooks (an outside effect) run per contact: alone
        in their task, or fanned out to single-contact tasks when there are several. Sends under
        a frequency cap go to `capped`, decided in the write's transaction."""
        planned: list[_Planned] = []
        config = None
        config_error: PermanentError | None = None
        if node is not None:
            try:
                config = parse_node_config(node.type, node.config)
            except PermanentError as exc:
                config_error = exc
        webhook_steps: list[tuple[LoadedStep, NodeDecision, uuid.UUID | None]] = []
        journey: _JourneyNow | None = None
        for step in steps:
            state = step.state
            if node is None or node.journey_id != state.journey_id:
                # Deleted by a live edit: read the journey as it is now, once per batch.
                journey = journey or _JourneyNow.read(self.store.connection, state)
                planned.append(self._node_gone(step, journey))
                continue
            assert state.current_node_id is not None
            if self._loop_detected(state.db_now, step.loop_times):
                planned.append(_fail(state, "loop_detected", node))
                continue
            pending = _pending_execution(step)
            if config_error is not None:
                planned.append(_fail(state, config_error.reason, node, pending))
                continue
            assert config is not None
            try:
                decision = decide(
                    node.type,
                    config,
                    node_id=node.id,
                    next_node_id=node.next_node_id,
                    contact=_contact_view(state),
                    db_now=state.db_now,
                    resuming_wait=_resuming_wait(step),
                )
            except PermanentError as exc:
                planned.append(_fail(state, exc.reason, node, pending))
                continue
            if decision.sms_body is not None and policy.applies:
                if policy.error is not None:
                    planned.append(_hold(state, INVALID_TENANT_SETTINGS))
                    continue
                held = policy.quiet_hours(state)
                if held is not None:
                    planned.append(self._held(state, decision, held, node, pending))
                    continue
                if policy.caps(config):
                    capped.append(_Capped(state, decision, node, pending))
                    continue
            if decision.webhook is None:
                planned.append(self._apply(state, decision, node, pending))
                continue
            try:
                # A URL naming a forbidden IP outright fails here, before any lock or
                # connection; names are checked where it counts, on the addresses connected to.
                self._webhook_egress().check_literal(decision.webhook.url)
            except PermanentError as exc:
                planned.append(_fail(state, exc.reason, node, pending))
                continue
            webhook_steps.append((step, decision, pending))
        if len(webhook_steps) == 1:
            step, decision, pending = webhook_steps[0]
            written += self._webhook_step(step, decision, node, pending, outcome)  # type: ignore[arg-type]
        else:
            for step, _decision, _pending in webhook_steps:
                state = step.state
                outcome.contacts.append(
                    ContactOutcome(state.id, "fanned_out", "webhook runs as its own task")
                )
                outcome.followups.append(
                    Followup(
                        names.EXECUTE_NODE,
                        execute_node_kwargs(
                            state.tenant_id, state.id, state.current_node_id, state.step_seq
                        ),  # type: ignore[arg-type]
                    )
                )
        return planned

    def _write_capped(
        self,
        tenant_id: uuid.UUID,
        planned: list[_Planned],
        capped: list[_Capped],
        policy: BatchSendPolicy,
    ) -> set[uuid.UUID]:
        """Check and count the capped sends and write the whole batch in one transaction: a
        concurrent send to the same contact waits on its lock, then counts these."""
        with self.store.transaction() as store:
            requests = [
                CapRequest(c.state, step_uuid("message", c.state.id, c.state.step_seq))
                for c in capped
            ]
            holds, counted = policy.check_and_count(store.connection, tenant_id, requests)
            for item in capped:
                held = holds[item.state.id]
                if held is None:
                    planned.append(self._apply(item.state, item.decision, item.node, item.pending))
                else:
                    planned.append(
                        self._held(item.state, item.decision, held, item.node, item.pending)
                    )
            claimed = store.write(tenant_id, [p.write for p in planned])
            # A step another worker took sends nothing here: its slot goes back.
            unsent = [
                r.message_id
                for r in requests
                if r.message_id in counted and r.state.id not in claimed
            ]
            send_counters.release_sends(store.connection, unsent)
        return claimed

    def _held(
        self,
        state: StepState,
        decision: NodeDecision,
        held: HeldSend,
        node: NodeRecord,
        pending: uuid.UUID | None,
    ) -> _Planned:
        """The send does not go now: SKIPPED, then on along the journey, or deferred (WAITING at
        this node, due when the rule allows it; the dispatcher runs the step again then)."""
        if held.until is None:
            instead = NodeDecision(
                ExecutionStatus.SKIPPED, decision.next_node_id, result=held.result
            )
        else:
            instead = NodeDecision(
                ExecutionStatus.SKIPPED, node.id, wake_at=held.until, result=held.result
            )
        item = self._apply(state, instead, node, pending)
        return replace(item, outcome=replace(item.outcome, policy=(held.rule, held.action)))

    def _node_gone(self, step: LoadedStep, journey: _JourneyNow) -> _Planned:
        """The contact's node was deleted while it was on its way there (tasks/journey_edits.py):
        redirected, its journey ended, or held PAUSED until upstream says where it goes."""
        state = step.state
        assert state.current_node_id is not None
        where = reroute(
            state.current_node_id,
            journey.nodes,
            journey.redirects,
            _previous_node(step),
            _contact_view(state),
            state.db_now,
        )
        if where is None:
            return _hold(state, NODE_NOT_FOUND)
        execution = ExecutionWrite(
            id=step_uuid("execution", state.id, state.step_seq),
            existing=False,
            node_id=None,  # the node is gone; the result names it
            status=ExecutionStatus.SKIPPED,
            error=None,
            result=where.result(state.current_node_id),
        )
        base = {
            "journey_contact_id": state.id,
            "contact_id": state.contact_id,
            "step_seq": state.step_seq,
            "next_step_seq": state.step_seq + 1,
            "execution": execution,
        }
        if where.to_node_id is None:
            write = StepWrite(
                **base,
                status=ContactStatus.COMPLETED,
                current_node_id=None,
                status_reason=NODE_REMOVED,
                completed=True,
            )
            return _Planned(
                write,
                ContactOutcome(
                    state.id, "executed", NODE_REMOVED, ExecutionStatus.SKIPPED, write.status
                ),
            )
        write = StepWrite(
            **base,
            status=ContactStatus.ACTIVE,
            current_node_id=where.to_node_id,
            due_in_seconds=self.settings.redispatch_grace_seconds,
        )
        return _Planned(
            write,
            ContactOutcome(state.id, "executed", REDIRECTED, ExecutionStatus.SKIPPED, write.status),
            where.to_node_id,
        )

    def _loop_detected(self, db_now: datetime, times: Sequence[datetime]) -> bool:
        """The last loop_repeats runs of this node all fell within the window: this would be one
        more. A weekly loop through a wait never trips it; a tight loop does, on its 4th run."""
        window_start = db_now - timedelta(seconds=self.settings.loop_window_seconds)
        limit = self.settings.loop_repeats
        return len(times) >= limit and min(times[:limit]) >= window_start

    def _webhook_step(
        self,
        step: LoadedStep,
        decision: NodeDecision,
        node: NodeRecord,
        pending: uuid.UUID | None,
        outcome: BatchOutcome,
    ) -> list[_Planned]:
        """The one outside effect: serialized per journey contact, so a duplicate running at the
        same moment waits and then finds the step taken instead of calling a second time (the
        Idempotency-Key covers what a crash may repeat). Written inside the exclusive hold."""
        state = step.state
        with self.store.exclusive(state.id, state.step_seq) as guarded:
            if guarded is None:
                outcome.contacts.append(
                    ContactOutcome(state.id, "duplicate", "another worker took this step")
                )
                return []
            try:
                decision = self._call_webhook(state, decision, node, _previous_node(step))
                planned = self._apply(state, decision, node, pending)
            except PermanentError as exc:
                planned = _fail(state, exc.reason, node, pending)
            claimed = guarded.write(state.tenant_id, [planned.write])
        if state.id not in claimed:
            outcome.contacts.append(
                ContactOutcome(state.id, "duplicate", "another worker took this step")
            )
            return []
        return [planned]

    def _call_webhook(
        self,
        state: StepState,
        decision: NodeDecision,
        node: NodeRecord,
        previous_node_id: uuid.UUID | None,
    ) -> NodeDecision:
        call = decision.webhook
        assert call is not None
        payload = {
            "tenant_id": str(state.tenant_id),
            "journey_id": str(state.journey_id),
            "journey_contact_id": str(state.id),
            "contact_id": str(state.contact_id),
            "node_id": str(node.id),
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

    def _apply(
        self,
        state: StepState,
        decision: NodeDecision,
        node: NodeRecord,
        pending: uuid.UUID | None,
    ) -> _Planned:
        execution = ExecutionWrite(
            id=pending or step_uuid("execution", state.id, state.step_seq),
            existing=pending is not None,
            node_id=node.id,
            status=decision.execution_status,
            error=None,
            result=decision.result,
        )
        message = (
            MessageWrite(step_uuid("message", state.id, state.step_seq), decision.sms_body)
            if decision.sms_body is not None
            else None
        )
        base: _Effects = {
            "journey_contact_id": state.id,
            "contact_id": state.contact_id,
            "step_seq": state.step_seq,
            "next_step_seq": state.step_seq + 1,
            "execution": execution,
            "message": message,
            "attribute_updates": decision.attribute_updates,
        }
        next_node = decision.next_node_id
        if decision.terminal_status is not None or next_node is None:
            status = decision.terminal_status or ContactStatus.COMPLETED
            write = StepWrite(
                **base,
                status=status,
                current_node_id=None,
                status_reason=decision.terminal_reason,
                completed=True,
            )
            publish_next = None
        elif decision.wake_at is not None:
            status = ContactStatus.WAITING
            write = StepWrite(
                **base, status=status, current_node_id=next_node, due_at=decision.wake_at
            )
            publish_next = None
        else:
            status = ContactStatus.ACTIVE
            # Due again after the grace period: if the message published after the commit is
            # lost, the dispatcher publishes this step again.
            write = StepWrite(
                **base,
                status=status,
                current_node_id=next_node,
                due_in_seconds=self.settings.redispatch_grace_seconds,
            )
            publish_next = next_node
        return _Planned(
            write,
            ContactOutcome(state.id, "executed", "", decision.execution_status, status),
            publish_next,
        )

    # --- after the write ---------------------------------------------------------------

    def _settle(
        self, planned: list[_Planned], claimed: set[uuid.UUID], outcome: BatchOutcome
    ) -> None:
        """Outcomes for every planned write, and followups only for those whose claim held."""
        next_steps: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {}
        messages: list[uuid.UUID] = []
        for item in planned:
            write = item.write
            if write.journey_contact_id not in claimed:
                # The conditional write found the step already taken: nothing was written, and
                # nothing may be published.
                outcome.contacts.append(
                    ContactOutcome(
                        write.journey_contact_id, "duplicate", "another worker took this step"
                    )
                )
                continue
            outcome.contacts.append(item.outcome)
            if item.next_node_id is not None:
                next_steps.setdefault(item.next_node_id, []).append(
                    (write.journey_contact_id, write.next_step_seq)
                )
            if write.message is not None:
                messages.append(write.message.id)
        size = self.settings.batch_size
        for node_id, steps in next_steps.items():
            for chunk in chunked(steps, size):
                outcome.followups.append(
                    Followup(
                        names.EXECUTE_BATCH, execute_batch_kwargs(outcome.tenant_id, node_id, chunk)
                    )
                )
        for chunk in chunked(messages, size):
            outcome.followups.append(
                Followup(
                    names.DELIVER_MESSAGES,
                    {"tenant_id": str(outcome.tenant_id), "message_ids": [str(m) for m in chunk]},
                )
            )


# --- plain functions over one contact's state ---------------------------------------------


def _not_this_step(state: StepState, ref: StepRef, node_id: uuid.UUID) -> str | None:
    """Why this message is not (or no longer) for the contact's current step, if it is not."""
    if state.status not in RUNNABLE:
        return f"journey contact is {state.status}"
    if ref.step is not None and ref.step != state.step_seq:
        return f"step {ref.step} is not the current step {state.step_seq}"
    if state.current_node_id != node_id:
        return "node is not the current node"
    if state.status == ContactStatus.WAITING and state.due_at and state.due_at > state.db_now:
        return "wait is not due yet"
    return None


def _contact_view(state: StepState) -> ContactView:
    return ContactView(
        id=state.contact_id,
        phone=state.phone,
        email=state.email,
        attributes=dict(state.attributes),
        opted_out=state.opted_out_at is not None and state.opted_out_at <= state.db_now,
    )


def _pending_execution(step: LoadedStep) -> uuid.UUID | None:
    """The PENDING (or RUNNING) row upstream made for this step, to complete in place."""
    state = step.state
    return next(
        (
            e.id
            for e in step.recent
            if e.node_id == state.current_node_id
            and e.status in (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
            and e.step_seq in (None, state.step_seq)
        ),
        None,
    )


def _resuming_wait(step: LoadedStep) -> bool:
    """The contact wakes at the node that put it to wait at the step before (wait_for_event's
    timeout), as opposed to arriving at it: the last execution is this node's, one step back.
    Not the status: the dispatcher marks a due wait ACTIVE when it publishes it. A
    wait_for_event never branches to itself, so nothing else leaves that trace."""
    state = step.state
    last = step.recent[0] if step.recent else None
    return (
        last is not None
        and last.node_id == state.current_node_id
        and last.step_seq == state.step_seq - 1
    )


def _previous_node(step: LoadedStep) -> uuid.UUID | None:
    previous = next((e for e in step.recent if e.status != ExecutionStatus.PENDING), None)
    return previous.node_id if previous else None


class _Claim(TypedDict):
    """The fields of a StepWrite that name the step and its claim, typed: a type checker
    checks each `StepWrite(**claim, ...)` against StepWrite's fields."""

    journey_contact_id: uuid.UUID
    contact_id: uuid.UUID
    step_seq: int
    next_step_seq: int


class _Effects(_Claim):
    execution: ExecutionWrite | None
    message: MessageWrite | None
    attribute_updates: dict[str, Any] | None


class _Unchanged(_Claim):
    current_node_id: uuid.UUID | None


def _unchanged(state: StepState) -> _Unchanged:
    return {
        "journey_contact_id": state.id,
        "contact_id": state.contact_id,
        "step_seq": state.step_seq,
        "current_node_id": state.current_node_id,
        "next_step_seq": state.step_seq,
    }


def _hold(state: StepState, reason: str) -> _Planned:
    """Keep the contact at this step, sending nothing, until the tenant or journey resumes."""
    write = StepWrite(**_unchanged(state), status=ContactStatus.PAUSED, status_reason=reason)
    return _Planned(
        write, ContactOutcome(state.id, "held", reason, contact_status=ContactStatus.PAUSED)
    )


def _finish(state: StepState, status: ContactStatus, reason: str) -> _Planned:
    write = StepWrite(**_unchanged(state), status=status, status_reason=reason, completed=True)
    return _Planned(write, ContactOutcome(state.id, "finished", reason, contact_status=status))


def _fail(
    state: StepState, reason: str, node: NodeRecord | None, pending: uuid.UUID | None = None
) -> _Planned:
    """FAILED with the reason; the step's execution row says FAILED too when there is a node."""
    execution = None
    if node is not None:
        execution = ExecutionWrite(
            id=pending or step_uuid("execution", state.id, state.step_seq),
            existing=pending is not None,
            node_id=node.id,
            status=ExecutionStatus.FAILED,
            error=reason,
            result={},
        )
    write = StepWrite(
        **(_unchanged(state) | {"next_step_seq": state.step_seq + (1 if node else 0)}),
        status=ContactStatus.FAILED,
        status_reason=reason,
        completed=True,
        execution=execution,
    )
    return _Planned(
        write,
        ContactOutcome(
            state.id,
            "failed",
            reason,
            ExecutionStatus.FAILED if node else None,
            ContactStatus.FAILED,
        ),
    )
