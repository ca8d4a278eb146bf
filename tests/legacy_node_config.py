"""The hand-written node config parser as it was before the published schemas became the check
(kept verbatim as an oracle: tests/test_node_schemas.py shows the schemas accept and reject the
same configs)."""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from tasks.errors import InvalidNodeConfig
from tasks.node_config import (  # the configs it builds are today's: only the checks are old
    ConditionConfig,
    ExitConfig,
    NodeConfig,
    SendSmsConfig,
    SplitBranch,
    SplitConfig,
    UpdateContactConfig,
    WaitConfig,
    WaitForEventConfig,
    WebhookConfig,
)

MAX_SMS_BODY = 1600
MAX_WAIT_SECONDS = 5 * 366 * 24 * 3600
# Below the task soft time limit (30 s), so a slow webhook fails as a timeout, not a kill.
MAX_WEBHOOK_TIMEOUT = 20
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
CONDITION_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "exists")
WEBHOOK_METHODS = ("POST", "PUT", "PATCH")


def _require_dict(config: object) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise InvalidNodeConfig(f"config must be an object, got {type(config).__name__}")
    return config


def _reject_unknown(config: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise InvalidNodeConfig(f"unknown key(s) {', '.join(unknown)}")


def _node_ref(config: dict[str, Any], key: str) -> uuid.UUID | None:
    value = config.get(key)
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidNodeConfig(f"{key} must be a node id (uuid) or null, got {value!r}") from None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_send_sms(config: dict[str, Any]) -> SendSmsConfig:
    _reject_unknown(config, {"body"})
    body = config.get("body")
    if not isinstance(body, str) or not body.strip():
        raise InvalidNodeConfig("send_sms needs a non-empty string body")
    if len(body) > MAX_SMS_BODY:
        raise InvalidNodeConfig(f"send_sms body longer than {MAX_SMS_BODY} characters")
    return SendSmsConfig(body=body)


def parse_wait(config: dict[str, Any]) -> WaitConfig:
    _reject_unknown(config, {"seconds", "until"})
    has_seconds, has_until = "seconds" in config, "until" in config
    if has_seconds == has_until:
        raise InvalidNodeConfig("wait needs exactly one of seconds or until")
    if has_seconds:
        seconds = config["seconds"]
        if not _number(seconds) or not 0 <= seconds <= MAX_WAIT_SECONDS:
            raise InvalidNodeConfig(f"wait seconds must be a number from 0 to {MAX_WAIT_SECONDS}")
        return WaitConfig(seconds=float(seconds), until=None)
    raw = config["until"]
    try:
        until = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidNodeConfig(f"wait until is not an ISO-8601 time: {raw!r}") from None
    if until.tzinfo is None:
        # Time zones are explicit: a naive time would mean whatever each worker's clock says.
        raise InvalidNodeConfig(f"wait until needs a time zone (Z or +hh:mm): {raw!r}")
    # UTC once, here: a database that stores wall-clock times (SQLite) would otherwise keep
    # 09:00+02:00 as 09:00 and wake the contact two hours late.
    return WaitConfig(seconds=None, until=until.astimezone(UTC))


def parse_condition(config: dict[str, Any]) -> ConditionConfig:
    _reject_unknown(config, {"field", "op", "value", "true_node_id", "false_node_id"})
    field = config.get("field")
    if not isinstance(field, str) or not field:
        raise InvalidNodeConfig("condition needs a field name")
    op = config.get("op")
    if op not in CONDITION_OPS:
        raise InvalidNodeConfig(f"condition op must be one of {', '.join(CONDITION_OPS)}")
    if op != "exists" and "value" not in config:
        raise InvalidNodeConfig(f"condition op {op} needs a value")
    value = config.get("value")
    if op == "in" and not isinstance(value, list):
        raise InvalidNodeConfig("condition op in needs a list value")
    return ConditionConfig(
        field=field,
        op=op,
        value=value,
        true_node_id=_node_ref(config, "true_node_id"),
        false_node_id=_node_ref(config, "false_node_id"),
    )


def parse_split(config: dict[str, Any]) -> SplitConfig:
    _reject_unknown(config, {"branches"})
    raw = config.get("branches")
    if not isinstance(raw, list) or not raw:
        raise InvalidNodeConfig("split needs a non-empty list of branches")
    branches = []
    for index, branch in enumerate(raw):
        if not isinstance(branch, dict):
            raise InvalidNodeConfig(f"split branch {index} must be an object")
        weight = branch.get("weight")
        if not _number(weight) or weight < 0:
            raise InvalidNodeConfig(f"split branch {index} needs a weight >= 0")
        branches.append(SplitBranch(weight=float(weight), node_id=_node_ref(branch, "node_id")))
    if sum(b.weight for b in branches) <= 0:
        raise InvalidNodeConfig("split weights must add up to more than 0")
    return SplitConfig(branches=tuple(branches))


def parse_update_contact(config: dict[str, Any]) -> UpdateContactConfig:
    _reject_unknown(config, {"set"})
    values = config.get("set")
    if not isinstance(values, dict) or not values:
        raise InvalidNodeConfig("update_contact needs a non-empty set object")
    return UpdateContactConfig(set=dict(values))


def parse_webhook(config: dict[str, Any]) -> WebhookConfig:
    _reject_unknown(config, {"url", "method", "timeout_seconds"})
    url = config.get("url")
    # The URL is never echoed: a stored reason must not carry its credentials or query string.
    try:
        parsed = urlsplit(url) if isinstance(url, str) else None
        valid = parsed is not None and bool(parsed.hostname) and parsed.port != 0
    except ValueError:  # a malformed port or IPv6 literal
        parsed, valid = None, False
    if parsed is None or parsed.scheme not in ("http", "https") or not valid:
        raise InvalidNodeConfig("webhook url must be an http(s) URL with a host")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidNodeConfig("webhook url must not contain whitespace or control characters")
    method = str(config.get("method", "POST")).upper()
    if method not in WEBHOOK_METHODS:
        raise InvalidNodeConfig(f"webhook method must be one of {', '.join(WEBHOOK_METHODS)}")
    timeout = config.get("timeout_seconds", 5)
    if not _number(timeout) or not 0 < timeout <= MAX_WEBHOOK_TIMEOUT:
        raise InvalidNodeConfig(f"webhook timeout_seconds must be in (0, {MAX_WEBHOOK_TIMEOUT}]")
    return WebhookConfig(url=url, method=method, timeout_seconds=float(timeout))


def parse_exit(config: dict[str, Any]) -> ExitConfig:
    _reject_unknown(config, set())
    return ExitConfig()


# From the two-way branch (not yet merged): the oracle for docs/schemas/nodes/wait_for_event.json.
MAX_EVENT_NAME = 128


def parse_wait_for_event(config: dict[str, Any]) -> WaitForEventConfig:
    _reject_unknown(
        config, {"event", "timeout_seconds", "matched_node_id", "timeout_node_id", "where"}
    )
    event = config.get("event")
    if not isinstance(event, str) or not event.strip() or len(event) > MAX_EVENT_NAME:
        raise InvalidNodeConfig(
            f"wait_for_event needs an event name of 1 to {MAX_EVENT_NAME} characters"
        )
    timeout = config.get("timeout_seconds")
    if not _number(timeout) or not 0 < timeout <= MAX_WAIT_SECONDS:
        raise InvalidNodeConfig(
            f"wait_for_event timeout_seconds must be a number in (0, {MAX_WAIT_SECONDS}]"
        )
    where = config.get("where", {})
    if where is None:
        where = {}
    if not isinstance(where, dict):
        raise InvalidNodeConfig("wait_for_event where must be an object of property values")
    return WaitForEventConfig(
        event=event,
        timeout_seconds=float(timeout),
        matched_node_id=_node_ref(config, "matched_node_id"),
        timeout_node_id=_node_ref(config, "timeout_node_id"),
        where=dict(where),
    )


PARSERS = {
    "send_sms": parse_send_sms,
    "wait": parse_wait,
    "condition": parse_condition,
    "split": parse_split,
    "update_contact": parse_update_contact,
    "webhook": parse_webhook,
    "exit": parse_exit,
    "wait_for_event": parse_wait_for_event,
}


def parse_node_config(node_type: str, config: object) -> NodeConfig:
    parser = PARSERS.get(node_type)
    if parser is None:
        raise InvalidNodeConfig(f"unknown node type {node_type!r}")
    return parser(_require_dict(config))
