"""Node configs: checked against the published schema of their node type
(docs/schemas/nodes/<type>.json, tasks/schemas.py), then read into frozen dataclasses.

What a config may hold is the schema's to say; the readers here only convert checked values
(ids to UUIDs, times to UTC, methods to upper case) and apply defaults."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tasks.errors import InvalidNodeConfig
from tasks.schema_errors import first_problem
from tasks.schemas import SchemaMissing, node_validator

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


@dataclass(frozen=True)
class SendSmsConfig:
    body: str
    # Exempt from the tenant's frequency cap (not from opt-out or quiet hours): contract v2.
    transactional: bool = False


@dataclass(frozen=True)
class WaitConfig:
    seconds: float | None
    until: datetime | None


@dataclass(frozen=True)
class ConditionConfig:
    field: str
    op: str
    value: Any
    true_node_id: uuid.UUID | None
    false_node_id: uuid.UUID | None


@dataclass(frozen=True)
class SplitBranch:
    weight: float
    node_id: uuid.UUID | None


@dataclass(frozen=True)
class SplitConfig:
    branches: tuple[SplitBranch, ...]


@dataclass(frozen=True)
class UpdateContactConfig:
    set: dict[str, Any]


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    method: str
    timeout_seconds: float


@dataclass(frozen=True)
class ExitConfig:
    pass


@dataclass(frozen=True)
class WaitForEventConfig:
    """Wait for an event of this name for the contact (properties equal to `where`), or for
    the timeout; then matched_node_id or timeout_node_id (null: the journey completes)."""

    event: str
    timeout_seconds: float
    matched_node_id: uuid.UUID | None
    timeout_node_id: uuid.UUID | None
    where: dict[str, Any]


NodeConfig = (
    SendSmsConfig
    | WaitConfig
    | ConditionConfig
    | SplitConfig
    | UpdateContactConfig
    | WebhookConfig
    | ExitConfig
    | WaitForEventConfig
)


def _node_ref(config: dict[str, Any], key: str) -> uuid.UUID | None:
    value = config.get(key)
    return None if value is None else uuid.UUID(value)


def read_send_sms(config: dict[str, Any]) -> SendSmsConfig:
    return SendSmsConfig(body=config["body"], transactional=config.get("transactional", False))


def read_wait(config: dict[str, Any]) -> WaitConfig:
    if "seconds" in config:
        return WaitConfig(seconds=float(config["seconds"]), until=None)
    until = datetime.fromisoformat(config["until"].replace("Z", "+00:00"))
    # UTC once, here: a database that stores wall-clock times (SQLite) would otherwise keep
    # 09:00+02:00 as 09:00 and wake the contact two hours late.
    return WaitConfig(seconds=None, until=until.astimezone(UTC))


def read_condition(config: dict[str, Any]) -> ConditionConfig:
    return ConditionConfig(
        field=config["field"],
        op=config["op"],
        value=config.get("value"),
        true_node_id=_node_ref(config, "true_node_id"),
        false_node_id=_node_ref(config, "false_node_id"),
    )


def read_split(config: dict[str, Any]) -> SplitConfig:
    return SplitConfig(
        branches=tuple(
            SplitBranch(weight=float(branch["weight"]), node_id=_node_ref(branch, "node_id"))
            for branch in config["branches"]
        )
    )


def read_update_contact(config: dict[str, Any]) -> UpdateContactConfig:
    return UpdateContactConfig(set=dict(config["set"]))


def read_webhook(config: dict[str, Any]) -> WebhookConfig:
    return WebhookConfig(
        url=config["url"],
        method=config.get("method", "POST").upper(),
        timeout_seconds=float(config.get("timeout_seconds", 5)),
    )


def read_exit(config: dict[str, Any]) -> ExitConfig:
    return ExitConfig()


# An event name's longest form: the wait_for_event node's schema and contact_event's agree.
MAX_EVENT_NAME = 128


def read_wait_for_event(config: dict[str, Any]) -> WaitForEventConfig:
    return WaitForEventConfig(
        event=config["event"],
        timeout_seconds=float(config["timeout_seconds"]),
        matched_node_id=_node_ref(config, "matched_node_id"),
        timeout_node_id=_node_ref(config, "timeout_node_id"),
        where=dict(config.get("where") or {}),
    )


# Each node type's reader; its schema (docs/schemas/nodes/<type>.json) is the check.
READERS: dict[str, Callable[[dict[str, Any]], NodeConfig]] = {
    "send_sms": read_send_sms,
    "wait": read_wait,
    "condition": read_condition,
    "split": read_split,
    "update_contact": read_update_contact,
    "webhook": read_webhook,
    "exit": read_exit,
    "wait_for_event": read_wait_for_event,
}


def check_node_config(node_type: str, config: object) -> None:
    """Raise InvalidNodeConfig naming the first problem the type's schema finds."""
    try:
        validator = node_validator(node_type)
    except SchemaMissing:
        raise InvalidNodeConfig(f"unknown node type {node_type!r}") from None
    problem = first_problem(validator, config, "config", "key")
    if problem is not None:
        raise InvalidNodeConfig(problem)


def parse_node_config(node_type: str, config: object) -> NodeConfig:
    reader = READERS.get(node_type)
    if reader is None:
        raise InvalidNodeConfig(f"unknown node type {node_type!r}")
    check_node_config(node_type, config)
    assert isinstance(config, dict)  # the schema's "type": "object"
    return reader(config)
