"""Node handlers: plain functions from (config, contact, clock) to a decision, no I/O.

The engine applies a batch's decisions in its one claim-and-write statement (db/step_store.py);
webhooks are the one node with an outside effect, which the handler describes and the engine
performs, alone in its task.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from db.statuses import ContactStatus, ExecutionStatus
from tasks.errors import InvalidNodeConfig, MissingPlaceholder
from tasks.node_config import (
    PLACEHOLDER,
    ConditionConfig,
    ExitConfig,
    NodeConfig,
    SendSmsConfig,
    SplitConfig,
    UpdateContactConfig,
    WaitConfig,
    WaitForEventConfig,
    WebhookConfig,
)


@dataclass(frozen=True)
class ContactView:
    id: uuid.UUID
    phone: str | None
    email: str | None
    attributes: dict[str, Any]
    opted_out: bool

    def lookup(self, name: str) -> tuple[bool, Any]:
        """Attributes first, then phone and email, as the contract says."""
        if name in self.attributes:
            return True, self.attributes[name]
        if name == "phone" and self.phone is not None:
            return True, self.phone
        if name == "email" and self.email is not None:
            return True, self.email
        return False, None


@dataclass(frozen=True)
class WebhookCall:
    url: str
    method: str
    timeout_seconds: float


@dataclass(frozen=True)
class NodeDecision:
    """What a node decided; the engine turns it into rows."""

    execution_status: ExecutionStatus = ExecutionStatus.COMPLETED
    next_node_id: uuid.UUID | None = None
    # None: go on to next_node_id now (or finish when it is None). Set: wait until then.
    wake_at: datetime | None = None
    # A terminal status other than COMPLETED (an exit node).
    terminal_status: ContactStatus | None = None
    terminal_reason: str | None = None
    sms_body: str | None = None
    attribute_updates: dict[str, Any] | None = None
    webhook: WebhookCall | None = None
    result: dict[str, Any] = field(default_factory=dict)


def render_body(template: str, contact: ContactView) -> str:
    def replace(match: Any) -> str:
        found, value = contact.lookup(match.group(1))
        if not found or value is None or value == "":
            raise MissingPlaceholder(match.group(1))
        return str(value)

    return PLACEHOLDER.sub(replace, template)


def send_sms(
    config: SendSmsConfig, contact: ContactView, next_node_id: uuid.UUID | None
) -> NodeDecision:
    if contact.opted_out:
        return NodeDecision(ExecutionStatus.SKIPPED, next_node_id, result={"skipped": "opted_out"})
    if not contact.phone:
        return NodeDecision(ExecutionStatus.SKIPPED, next_node_id, result={"skipped": "no_phone"})
    body = render_body(config.body, contact)
    return NodeDecision(next_node_id=next_node_id, sms_body=body)


def wait(config: WaitConfig, db_now: datetime, next_node_id: uuid.UUID | None) -> NodeDecision:
    wake_at = (
        db_now + timedelta(seconds=config.seconds) if config.seconds is not None else config.until
    )
    assert wake_at is not None
    if wake_at <= db_now:
        # A wait until a time already past fires at once.
        return NodeDecision(next_node_id=next_node_id, result={"waited": False})
    return NodeDecision(
        next_node_id=next_node_id, wake_at=wake_at, result={"wake_at": wake_at.isoformat()}
    )


def _compare(op: str, actual: Any, expected: Any) -> bool:
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (actual, expected)
    )
    if op == "eq":
        return actual == expected
    if op == "ne":
        return actual != expected
    if op == "in":
        return actual in expected
    # Ordering compares numbers with numbers and strings with strings, never across types.
    if not numbers and not (isinstance(actual, str) and isinstance(expected, str)):
        return False
    return {
        "gt": actual > expected,
        "gte": actual >= expected,
        "lt": actual < expected,
        "lte": actual <= expected,
    }[op]


def condition(config: ConditionConfig, contact: ContactView) -> NodeDecision:
    found, actual = contact.lookup(config.field)
    matched = (
        found if config.op == "exists" else found and _compare(config.op, actual, config.value)
    )
    return NodeDecision(
        next_node_id=config.true_node_id if matched else config.false_node_id,
        result={"matched": matched},
    )


def split_position(contact_id: uuid.UUID, node_id: uuid.UUID) -> float:
    """A number in [0, 1) fixed for a contact and node, so reruns pick the same branch."""
    digest = hashlib.sha256(f"{contact_id}:{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split(config: SplitConfig, contact: ContactView, node_id: uuid.UUID) -> NodeDecision:
    total = sum(b.weight for b in config.branches)
    point = split_position(contact.id, node_id) * total
    for index, branch in enumerate(config.branches):
        if point < branch.weight or index == len(config.branches) - 1:
            return NodeDecision(next_node_id=branch.node_id, result={"branch": index})
        point -= branch.weight
    raise AssertionError("unreachable: split has at least one branch")


def update_contact(config: UpdateContactConfig, next_node_id: uuid.UUID | None) -> NodeDecision:
    return NodeDecision(
        next_node_id=next_node_id,
        attribute_updates=config.set,
        result={"updated": sorted(config.set)},
    )


def webhook(config: WebhookConfig, next_node_id: uuid.UUID | None) -> NodeDecision:
    call = WebhookCall(config.url, config.method, config.timeout_seconds)
    return NodeDecision(next_node_id=next_node_id, webhook=call)


def wait_for_event(
    config: WaitForEventConfig, node_id: uuid.UUID, db_now: datetime, resuming: bool
) -> NodeDecision:
    """Entering: wait at this very node until the timeout (an event may end the wait first:
    tasks/contact_events.py claims the same step). Resuming at the timeout: the timeout branch.
    A branch back to this very node is refused: waking here must mean the timeout."""
    if node_id in (config.matched_node_id, config.timeout_node_id):
        raise InvalidNodeConfig("wait_for_event cannot branch to itself")
    if resuming:
        return NodeDecision(
            next_node_id=config.timeout_node_id,
            result={"event": config.event, "matched": False, "timed_out": True},
        )
    wake_at = db_now + timedelta(seconds=config.timeout_seconds)
    return NodeDecision(
        next_node_id=node_id,
        wake_at=wake_at,
        result={"waiting_for": config.event, "timeout_at": wake_at.isoformat()},
    )


def decide(
    node_type: str,
    config: NodeConfig,
    *,
    node_id: uuid.UUID,
    next_node_id: uuid.UUID | None,
    contact: ContactView,
    db_now: datetime,
    resuming_wait: bool = False,
) -> NodeDecision:
    """Run the handler for one node. `resuming_wait`: the contact is waking up at the node that
    put it to wait (a wait_for_event's timeout)."""
    match config:
        case WaitForEventConfig():
            return wait_for_event(config, node_id, db_now, resuming_wait)
        case SendSmsConfig():
            return send_sms(config, contact, next_node_id)
        case WaitConfig():
            return wait(config, db_now, next_node_id)
        case ConditionConfig():
            return condition(config, contact)
        case SplitConfig():
            return split(config, contact, node_id)
        case UpdateContactConfig():
            return update_contact(config, next_node_id)
        case WebhookConfig():
            return webhook(config, next_node_id)
        case ExitConfig():
            return NodeDecision(terminal_status=ContactStatus.EXITED, terminal_reason="exit_node")
    raise AssertionError(f"no handler for {node_type}")
