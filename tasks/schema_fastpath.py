"""A fast yes for the common case: a schema of plain keywords compiled into one predicate.

jsonschema descends into every array item with a fresh validator, about 35 µs per
[journey_contact_id, step] pair: 7 ms for a batch of 200, on every batch. The worker's task
schemas use a handful of plain keywords, so they compile into nested closures that say only
whether a document is valid, with the same type checks and pattern reading as the validator
(tasks/schemas.py). A schema with any other keyword does not compile (None): the validator
decides alone. An invalid document always goes to the validator too, which names the problem,
so the fast path can only ever say yes to what the validator accepts (tests/test_contract_docs.py
checks that they agree).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[object], bool]

# Keywords that never change validity (`format: uuid` is not checked: the pattern is).
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "title", "description", "examples", "default", "errorMessage", "$comment"}
)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "minimum": lambda value, bound: value >= bound,
    "maximum": lambda value, bound: value <= bound,
    "exclusiveMinimum": lambda value, bound: value > bound,
    "exclusiveMaximum": lambda value, bound: value < bound,
}


class _NotCompiled(Exception):
    pass


def compile_schema(
    schema: object, types: Mapping[str, Predicate], pattern: Callable[[str], Any]
) -> Predicate | None:
    """The predicate for `schema`, or None when it uses a keyword not handled here. `types`
    (one predicate per JSON type) and `pattern` (a compiled pattern for a pattern string) read
    the schema as the validator does."""
    try:
        return _compile(schema, types, pattern)
    except _NotCompiled:
        return None


def _compile(
    schema: object, types: Mapping[str, Predicate], pattern: Callable[[str], Any]
) -> Predicate:
    if schema is True:
        return lambda _: True
    if schema is False:
        return lambda _: False
    if not isinstance(schema, dict):
        raise _NotCompiled
    checks: list[Predicate] = []
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        if keyword == "format":
            if value != "uuid":
                raise _NotCompiled
        elif keyword == "type":
            alternatives = [types[name] for name in (value if isinstance(value, list) else [value])]
            checks.append(_any(alternatives))
        elif keyword == "pattern":
            compiled = pattern(value)
            checks.append(lambda v, c=compiled: not isinstance(v, str) or bool(c.search(v)))
        elif keyword in _COMPARE:
            compare = _COMPARE[keyword]
            checks.append(
                lambda v, b=value, f=compare, number=types["number"]: not number(v) or f(v, b)
            )
        elif keyword in ("minLength", "maxLength", "minItems", "maxItems"):
            kind = str if keyword.endswith("Length") else list
            at_least = keyword.startswith("min")
            checks.append(
                lambda v, n=value, k=kind, lo=at_least: (
                    not isinstance(v, k) or (len(v) >= n if lo else len(v) <= n)
                )
            )
        elif keyword == "required":
            checks.append(
                lambda v, names=tuple(value): not isinstance(v, dict) or all(n in v for n in names)
            )
        elif keyword == "properties":
            props = {name: _compile(sub, types, pattern) for name, sub in value.items()}
            checks.append(
                lambda v, p=props: (
                    not isinstance(v, dict)
                    or all(check(v[name]) for name, check in p.items() if name in v)
                )
            )
        elif keyword == "additionalProperties":
            known = frozenset(schema.get("properties", {}))
            if "patternProperties" in schema:
                raise _NotCompiled
            extra = _compile(value, types, pattern)
            checks.append(
                lambda v, k=known, e=extra: (
                    not isinstance(v, dict) or all(e(v[name]) for name in v if name not in k)
                )
            )
        elif keyword == "prefixItems":
            prefix = [_compile(sub, types, pattern) for sub in value]
            checks.append(_prefix_items(prefix))
        elif keyword == "items":
            rest = _compile(value, types, pattern)
            skip = len(schema.get("prefixItems", ()))
            checks.append(_items(rest, skip))
        else:
            raise _NotCompiled
    return _all(checks)


def _all(checks: list[Predicate]) -> Predicate:
    if len(checks) == 1:
        return checks[0]

    def every(value: object) -> bool:
        return all(check(value) for check in checks)

    return every


def _any(checks: list[Predicate]) -> Predicate:
    if len(checks) == 1:
        return checks[0]
    return lambda value: any(check(value) for check in checks)


def _prefix_items(prefix: list[Predicate]) -> Predicate:
    def check(value: object) -> bool:
        if isinstance(value, list):
            for item_check, item in zip(prefix, value, strict=False):
                if not item_check(item):
                    return False
        return True

    return check


def _items(rest: Predicate, skip: int) -> Predicate:
    def check(value: object) -> bool:
        if isinstance(value, list):
            for index in range(skip, len(value)):
                if not rest(value[index]):
                    return False
        return True

    return check
