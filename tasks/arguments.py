"""Validating task arguments: upstream writes them in any language, so trust nothing."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
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
    names.JOURNEY_UPDATED: (frozenset({"tenant_id", "journey_id"}), frozenset({"redirects"})),
    names.JOURNEY_DELETED: (frozenset({"tenant_id", "journey_id"}), frozenset()),
    names.TENANT_UPDATED: (frozenset({"tenant_id"}), frozenset()),
    names.DELIVER_MESSAGE: (frozenset({"tenant_id", "message_id"}), frozenset()),
    names.EXECUTE_BATCH: (frozenset({"tenant_id", "node_id", "journey_contacts"}), frozenset()),
    names.DELIVER_MESSAGES: (frozenset({"tenant_id", "message_ids"}), frozenset()),
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


def redirects_arg(kwargs: Mapping[str, Any]) -> dict[uuid.UUID, uuid.UUID | None]:
    """journey_updated's optional `redirects`: {deleted node id: new node id or null}."""
    value = kwargs.get("redirects")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadMessage(f"redirects must be an object, got {type(value).__name__}")
    redirects: dict[uuid.UUID, uuid.UUID | None] = {}
    for old, new in value.items():
        key = uuid_arg({"redirects key": old}, "redirects key")
        redirects[key] = (
            None if new is None else uuid_arg({f"redirects[{old}]": new}, f"redirects[{old}]")
        )
    return redirects


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
