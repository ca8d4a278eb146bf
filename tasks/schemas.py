"""The published JSON Schemas, loaded once and used as the worker's own checks.

docs/schemas/<task name>.json describes each task's keyword arguments and
docs/schemas/nodes/<node type>.json each node type's config. The worker validates against
exactly these files (Draft 2020-12), so the documented contract and the worker cannot
disagree: adding a task or a node type means adding its file, nothing here.

Two readings are pinned where JSON Schema leaves them to the implementation, so that every
validator upstream may use reads the files the same way:
- a number is finite (JSON has no NaN or Infinity, though Python's json module reads them);
- `$` in a pattern ends the string, as in ECMA-262 (Python's `$` also matches before a final
  newline, which would let "<uuid>\\n" through);
and the formats the files use are checked (`date-time`: ISO 8601 with a time zone; `uri`:
an http(s) URL with a host and no whitespace), each failure saying why.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.protocols import Validator

from tasks.schema_fastpath import Predicate, compile_schema

# Next to the packages in a clone and in an editable install (`pip install -e .`).
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
NODE_SCHEMA_DIR = SCHEMA_DIR / "nodes"


class SchemaMissing(LookupError):
    """A task or node type without its published schema: a bug, found at start and in tests."""


def _finite_number(checker: object, instance: object) -> bool:
    return (
        isinstance(instance, int | float)
        and not isinstance(instance, bool)
        and (not isinstance(instance, float) or math.isfinite(instance))
    )


def _finite_integer(checker: object, instance: object) -> bool:
    # JSON Schema's integer includes 1.0; the reader converts it with int().
    return _finite_number(checker, instance) and float(instance).is_integer()  # type: ignore[arg-type]


@cache
def _ecma_pattern(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(
    validator: Validator, pattern: str, instance: object, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not _ecma_pattern(pattern).search(instance):
        yield ValidationError(f"does not match {pattern!r}")


FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        moment = datetime.fromisoformat(instance.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        # Time zones are explicit: a naive time would mean whatever each worker's clock says.
        raise ValueError("needs a time zone (Z or +hh:mm)")
    return True


@FORMATS.checks("uri", raises=ValueError)
def _http_url(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        parsed = urlsplit(instance)
        valid = parsed.scheme in ("http", "https") and bool(parsed.hostname) and parsed.port != 0
    except ValueError:  # a malformed port or IPv6 literal
        valid = False
    if not valid:
        raise ValueError("must be an http(s) URL with a host")
    if any(ch.isspace() or ord(ch) < 32 for ch in instance):
        raise ValueError("must not contain whitespace or control characters")
    return True


# The validator's types as plain predicates, for the fast path (tests check they agree).
JSON_TYPES: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: _finite_integer(None, v),
    "number": lambda v: _finite_number(None, v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}

ContractValidator = validators.extend(
    Draft202012Validator,
    validators={"pattern": _pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _finite_number, "integer": _finite_integer}
    ),
)


def load(path: Path) -> dict[str, Any]:
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


def validator_for(path: Path) -> Validator:
    return ContractValidator(load(path), format_checker=FORMATS)


@cache
def task_validator(task_name: str) -> Validator:
    path = SCHEMA_DIR / f"{task_name}.json"
    if not path.is_file():
        raise SchemaMissing(f"task {task_name} has no schema: add {path}")
    return validator_for(path)


@cache
def task_fast_path(task_name: str) -> Predicate:
    """Whether a task's arguments are valid, fast where the schema compiles
    (tasks/schema_fastpath.py); the validator otherwise."""
    validator = task_validator(task_name)
    compiled = compile_schema(validator.schema, JSON_TYPES, _ecma_pattern)
    return compiled or validator.is_valid


@cache
def node_validator(node_type: str) -> Validator:
    path = NODE_SCHEMA_DIR / f"{node_type}.json"
    if not path.is_file():
        raise SchemaMissing(f"node type {node_type!r} has no schema: add {path}")
    return validator_for(path)


def task_names() -> list[str]:
    """The tasks the published schemas describe."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))


def node_types() -> list[str]:
    """The node types the published schemas describe."""
    return sorted(p.stem for p in NODE_SCHEMA_DIR.glob("*.json"))


def require_task_schemas(registered: list[str]) -> None:
    """At worker start: every task this worker runs has its published schema, checked."""
    missing = []
    for name in registered:
        try:
            task_validator(name)
        except SchemaMissing:
            missing.append(name)
    if missing:
        raise SchemaMissing(f"tasks without a schema in {SCHEMA_DIR}: {', '.join(missing)}")
