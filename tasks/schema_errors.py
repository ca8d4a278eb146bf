"""One line per invalid document, naming the field and the problem, from a schema's errors.

A schema may word a problem itself with `errorMessage` (the ajv-errors convention): a string,
or an object keyed by the failing keyword with "_" for any other. `{name}` is the field's
path (journey_contacts[3][0], branches[1].weight), `{value}` its value (shortened; use it
only where the value is an id, never a body, phone number or URL), `{cause}` what a format
check found. Without one, the generic wording below applies. A missing property takes the
property's own message where it has one.

Values are echoed only where the field is a UUID: an error line must not carry message
bodies, phone numbers or a URL's credentials.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from jsonschema import ValidationError
from jsonschema.protocols import Validator

# Shallow problems first; at one depth, the shape before the values. A list's `contains` sums
# up its entries, so a problem with an entry comes before it.
_RANK = {"type": 0, "required": 1, "additionalProperties": 2, "oneOf": 3, "anyOf": 3}
_LAST = ("contains",)
_COMPARISONS = {
    "minimum": ">=",
    "exclusiveMinimum": ">",
    "maximum": "<=",
    "exclusiveMaximum": "<",
}


def first_problem(validator: Validator, document: object, root: str, noun: str) -> str | None:
    """The first problem with `document`, in one line; None when it is valid. `root` names the
    document itself ("config"), `noun` its top-level keys ("argument", "key")."""
    if validator.is_valid(document):
        return None
    errors = sorted(
        validator.iter_errors(document),
        key=lambda e: (
            99 if e.validator in _LAST else len(e.absolute_path),
            _RANK.get(str(e.validator), 9),
            len(e.absolute_schema_path),
        ),
    )
    return describe(errors[0], root, noun)


def label(path: Iterable[Any], root: str) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or root


def short(value: object) -> str:
    return repr(value[:64] if isinstance(value, str) else value)[:80]


def _key(key: str) -> str:
    """A key as written, or quoted when it is long or not printable: still one line."""
    return key if key.isprintable() and len(key) <= 40 else repr(key[:40])


def _custom(schema: object, keyword: str) -> str | None:
    if not isinstance(schema, dict):
        return None
    message = schema.get("errorMessage")
    if isinstance(message, dict):
        message = message.get(keyword, message.get("_"))
    return message if isinstance(message, str) else None


def _fill(template: str, name: str, value: object, cause: object) -> str:
    return (
        template.replace("{name}", name)
        .replace("{value}", short(value))
        .replace("{cause}", str(cause or "is invalid"))
    )


def _is_uuid(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "uuid"


def _noun_of_items(schema: dict[str, Any]) -> str:
    items = schema.get("items")
    return "UUID strings" if isinstance(items, dict) and _is_uuid(items) else "entries"


def describe(error: ValidationError, root: str, noun: str) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    keyword = str(error.validator)
    path: Sequence[Any] = list(error.absolute_path)
    name = label(path, root)
    value = error.instance
    at_root = not path
    if "propertyNames" in error.absolute_schema_path:
        # The key itself is the problem; keys are short ids or names, never bodies.
        name, at_root = f"{name} key {short(value)}", False

    if keyword == "required" and isinstance(value, dict):
        missing = [p for p in error.validator_value if p not in value]
        properties = schema.get("properties", {})
        for prop in missing:
            own = _custom(properties.get(prop), "required")
            if own:
                return _fill(own, label([*path, prop], root), None, None)
        custom = _custom(schema, keyword)
        if custom:
            return _fill(custom, name, value, None)
        listed = ", ".join(sorted(missing))
        return f"missing {noun}(s) {listed}" if at_root else f"{name} needs {listed}"
    if keyword == "additionalProperties" and isinstance(value, dict):
        extra = ", ".join(sorted(_key(k) for k in set(value) - set(schema.get("properties", {}))))
        return f"unknown {noun}(s) {extra}" if at_root else f"{name} has unknown key(s) {extra}"

    custom = _custom(schema, keyword)
    if custom:
        return _fill(custom, name, value, error.cause)

    got = type(value).__name__
    if keyword == "type":
        if _is_uuid(schema):
            return f"{name} must be a UUID string, got {type(value).__name__}"
        expected = error.validator_value
        if expected == "integer":
            return f"{name} must be a whole number{_bounds(schema)}, got {short(value)}"
        if expected == "array" and schema.get("minItems") == 1:
            return f"{name} must be a non-empty list of {_noun_of_items(schema)}"
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{name} must be {_article(wanted)}, got {got}"
    if keyword in ("pattern", "format") and _is_uuid(schema):
        return f"{name} is not a UUID: {short(value)}"
    if keyword in _COMPARISONS:
        if schema.get("type") == "integer":
            return f"{name} must be a whole number{_bounds(schema)}, got {short(value)}"
        return f"{name} must be {_COMPARISONS[keyword]} {error.validator_value}, got {short(value)}"
    if keyword == "format":
        return f"{name} {error.cause or f'is not a valid {error.validator_value}'}"
    if keyword == "pattern":
        return f"{name} does not match the pattern {error.validator_value}"
    if keyword == "enum":
        return f"{name} must be one of {', '.join(map(str, error.validator_value))}"
    if keyword == "const":
        return f"{name} must be {error.validator_value!r}"
    if keyword == "minLength":
        limit = error.validator_value
        return f"{name} must not be empty" if limit == 1 else f"{name} needs {limit}+ characters"
    if keyword == "maxLength":
        return f"{name} is longer than {error.validator_value} characters"
    if keyword == "minItems":
        if error.validator_value == 1:
            return f"{name} must be a non-empty list of {_noun_of_items(schema)}"
        return f"{name} needs at least {error.validator_value} entries"
    if keyword == "maxItems":
        count = len(value) if isinstance(value, list) else "too many"
        what = "ids" if _noun_of_items(schema) == "UUID strings" else "entries"
        return f"{name} has {count} {what}; at most {error.validator_value} per message"
    if keyword == "minProperties":
        return f"{name} must not be empty"
    if keyword in ("items", "prefixItems", "unevaluatedItems"):
        return f"{name} has entries beyond those allowed"
    if keyword in ("oneOf", "anyOf"):
        # The form whose type fits says best what is wrong (a string that is not a UUID, not
        # "is not null").
        fitting = [e for e in error.context or () if e.validator != "type"]
        if fitting:
            return describe(fitting[0], root, noun)
        if keyword == "oneOf" and not error.context:
            return f"{name} matches more than one of its allowed forms"
        return f"{name} matches none of its allowed forms"
    if keyword == "contains":
        return f"{name} has no entry of the kind it needs"
    return f"{name} fails {keyword}"


def _bounds(schema: dict[str, Any]) -> str:
    return "".join(f" {op} {schema[k]}" for k, op in _COMPARISONS.items() if k in schema)


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"
