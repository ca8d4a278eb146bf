"""Validating task arguments: upstream writes them in any language, so trust nothing.

The check is the published schema of the task (docs/schemas/<task name>.json, loaded by
tasks/schemas.py); the readers below only turn checked strings into typed values, plus the
limits that are settings rather than contract (ENROLL_MAX_CONTACTS, BATCH_SIZE)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tasks.errors import BadMessage
from tasks.schema_errors import first_problem
from tasks.schemas import task_fast_path, task_validator


def check_kwargs(task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Reject positional arguments, and keyword arguments the task's schema rejects, naming
    the first problem (all missing or unknown arguments at once)."""
    if args:
        raise BadMessage(f"positional arguments are not accepted, got {len(args)}")
    if task_fast_path(task_name)(kwargs):
        return
    problem = first_problem(task_validator(task_name), dict(kwargs), "arguments", "argument")
    if problem is not None:
        raise BadMessage(problem)


def uuid_arg(kwargs: Mapping[str, Any], name: str) -> uuid.UUID:
    """A UUID from its string: the message edge, where ids stop being strings."""
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
    """The checked `step` (JSON Schema's integer includes 1.0)."""
    step = kwargs.get("step")
    return None if step is None else int(step)


def _within(name: str, values: Sequence[Any], limit: int, what: str) -> None:
    if len(values) > limit:
        raise BadMessage(f"{name} has {len(values)} {what}; at most {limit} per message")


def step_list_arg(kwargs: Mapping[str, Any], name: str, limit: int) -> list[tuple[uuid.UUID, int]]:
    """A batch's checked journey contacts: [journey_contact_id, step] pairs."""
    values = kwargs[name]
    _within(name, values, limit, "entries")
    return [(uuid.UUID(journey_contact_id), int(step)) for journey_contact_id, step in values]


def uuid_list_arg(kwargs: Mapping[str, Any], name: str, limit: int) -> list[uuid.UUID]:
    """A checked list of UUID strings."""
    values = kwargs[name]
    _within(name, values, limit, "ids")
    return [uuid.UUID(value) for value in values]


def contact_updates_arg(
    kwargs: Mapping[str, Any], name: str, limit: int
) -> dict[uuid.UUID, dict[str, Any]]:
    """A non-empty list of {"contact_id": UUID, "set": {non-empty object}}; a contact named twice
    gets both sets merged in order (the later value of a key wins), as two messages would."""
    values = kwargs.get(name)
    if not isinstance(values, list) or not values:
        raise BadMessage(f"{name} must be a non-empty list of {{contact_id, set}} objects")
    if len(values) > limit:
        raise BadMessage(f"{name} has {len(values)} entries; at most {limit} per message")
    merged: dict[uuid.UUID, dict[str, Any]] = {}
    for index, entry in enumerate(values):
        label = f"{name}[{index}]"
        if not isinstance(entry, dict):
            raise BadMessage(f"{label} must be an object with contact_id and set")
        keys = set(entry)
        if keys != {"contact_id", "set"}:
            missing = sorted({"contact_id", "set"} - keys)
            unknown = sorted(keys - {"contact_id", "set"})
            problem = f"missing {', '.join(missing)}" if missing else ""
            problem += ("; " if missing and unknown else "") + (
                f"unknown {', '.join(unknown)}" if unknown else ""
            )
            raise BadMessage(f"{label}: {problem}")
        contact_id = uuid_arg({f"{label}.contact_id": entry["contact_id"]}, f"{label}.contact_id")
        attributes = entry["set"]
        if not isinstance(attributes, dict) or not attributes:
            raise BadMessage(f"{label}.set must be a non-empty object")
        merged.setdefault(contact_id, {}).update(attributes)
    return merged


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
