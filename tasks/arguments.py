"""Validating task arguments: upstream writes them in any language, so trust nothing."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tasks import names
from tasks.errors import BadMessage

# Each task's keyword arguments: (required, optional). docs/schemas/ publishes the same.
SIGNATURES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    names.ENROLL: (frozenset({"tenant_id", "journey_id", "contact_ids"}), frozenset()),
    names.EXECUTE_NODE: (
        frozenset({"tenant_id", "journey_contact_id", "node_id"}),
        frozenset({"step"}),
    ),
    names.JOURNEY_UPDATED: (frozenset({"tenant_id", "journey_id"}), frozenset()),
    names.JOURNEY_DELETED: (frozenset({"tenant_id", "journey_id"}), frozenset()),
    names.TENANT_UPDATED: (frozenset({"tenant_id"}), frozenset()),
    names.DELIVER_MESSAGE: (frozenset({"tenant_id", "message_id"}), frozenset()),
    names.EXECUTE_BATCH: (frozenset({"tenant_id", "node_id", "journey_contacts"}), frozenset()),
    names.DELIVER_MESSAGES: (frozenset({"tenant_id", "message_ids"}), frozenset()),
    names.INBOUND_MESSAGE: (
        frozenset({"tenant_id", "from_phone", "to_phone", "body", "provider_message_id"}),
        frozenset(),
    ),
    names.DELIVERY_RECEIPT: (
        frozenset({"tenant_id", "provider_message_id", "status"}),
        frozenset({"error_code", "occurred_at"}),
    ),
    names.CONTACT_EVENT: (
        frozenset({"tenant_id", "contact_id", "name"}),
        frozenset({"properties", "occurred_at", "event_id"}),
    ),
}


def check_kwargs(task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Reject positional, missing and unknown arguments, naming them."""
    required, optional = SIGNATURES[task_name]
    if args:
        raise BadMessage(f"positional arguments are not accepted, got {len(args)}")
    missing = sorted(required - set(kwargs))
    if missing:
        raise BadMessage(f"missing argument(s) {', '.join(missing)}")
    unknown = sorted(set(kwargs) - required - optional)
    if unknown:
        raise BadMessage(f"unknown argument(s) {', '.join(unknown)}")


def uuid_arg(kwargs: Mapping[str, Any], name: str) -> uuid.UUID:
    value = kwargs.get(name)
    if not isinstance(value, str):
        raise BadMessage(f"{name} must be a UUID string, got {type(value).__name__}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadMessage(f"{name} is not a UUID: {value[:64]!r}") from None


def optional_step(kwargs: Mapping[str, Any]) -> int | None:
    step = kwargs.get("step")
    if step is None:
        return None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise BadMessage(f"step must be a whole number >= 0, got {step!r}")
    return step


def step_list_arg(kwargs: Mapping[str, Any], name: str, limit: int) -> list[tuple[uuid.UUID, int]]:
    """A batch's journey contacts: a non-empty list of [journey_contact_id, step] pairs."""
    values = kwargs.get(name)
    if not isinstance(values, list) or not values:
        raise BadMessage(f"{name} must be a non-empty list of [journey_contact_id, step] pairs")
    if len(values) > limit:
        raise BadMessage(f"{name} has {len(values)} entries; at most {limit} per message")
    pairs = []
    for index, pair in enumerate(values):
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadMessage(f"{name}[{index}] must be a [journey_contact_id, step] pair")
        label = f"{name}[{index}][0]"
        journey_contact_id = uuid_arg({label: pair[0]}, label)
        step = optional_step({"step": pair[1]})
        if step is None:
            raise BadMessage(f"{name}[{index}][1] must be a whole number >= 0")
        pairs.append((journey_contact_id, step))
    return pairs


def uuid_list_arg(kwargs: Mapping[str, Any], name: str, limit: int) -> list[uuid.UUID]:
    values = kwargs.get(name)
    if not isinstance(values, list) or not values:
        raise BadMessage(f"{name} must be a non-empty list of UUID strings")
    if len(values) > limit:
        raise BadMessage(f"{name} has {len(values)} ids; at most {limit} per message")
    return [uuid_arg({name: v}, name) for v in values]


def loggable_ids(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """The id-like arguments, shortened, for error lines (never bodies or phone numbers)."""
    return {k: str(v)[:64] for k, v in kwargs.items() if k.endswith("_id") or k in ("step",)}


def string_arg(
    kwargs: Mapping[str, Any], name: str, max_length: int, *, allow_empty: bool = False
) -> str:
    """A string of at most `max_length` characters (non-blank unless `allow_empty`)."""
    value = kwargs.get(name)
    if not isinstance(value, str):
        raise BadMessage(f"{name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise BadMessage(f"{name} must not be empty")
    if len(value) > max_length:
        raise BadMessage(f"{name} is longer than {max_length} characters")
    return value


def optional_time_arg(kwargs: Mapping[str, Any], name: str) -> datetime | None:
    """An ISO 8601 time with a time zone (Z or +hh:mm), as UTC; None when absent or null."""
    value = kwargs.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadMessage(f"{name} must be an ISO 8601 string, got {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadMessage(f"{name} is not an ISO 8601 time: {value[:64]!r}") from None
    if moment.tzinfo is None:
        raise BadMessage(f"{name} needs a time zone (Z or +hh:mm): {value[:64]!r}")
    return moment.astimezone(UTC)
