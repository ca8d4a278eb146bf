"""ConfigError, and how a pydantic ValidationError becomes one line that names the variable."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


# The problem, worded once for every section. Only these typed errors repeat the value, and only
# number, flag and choice fields raise them: a URL field's validator words its own problem and
# never repeats the URL, which may hold a password.
_PROBLEMS = {
    "int_parsing": "expected a whole number, got {input!r}",
    "int_from_float": "expected a whole number, got {input!r}",
    "int_type": "expected a whole number, got {input!r}",
    "float_parsing": "expected a number, got {input!r}",
    "float_type": "expected a number, got {input!r}",
    "finite_number": "expected a finite number, got {input!r}",
    "greater_than_equal": "must be at least {ge}, got {input!r}",
    "greater_than": "must be greater than {gt}, got {input!r}",
    "less_than_equal": "must be at most {le}, got {input!r}",
    "less_than": "must be less than {lt}, got {input!r}",
    "bool_parsing": "expected true or false, got {input!r}",
    "bool_type": "expected true or false, got {input!r}",
    "literal_error": "expected one of {choices}, got {input!r}",
    "extra_forbidden": "not a setting of this section",
}
# Errors that only follow from an earlier one (a default computed from a field that failed).
_CONSEQUENCES = frozenset({"default_factory_not_called"})


def config_error(section: type[BaseModel], exc: ValidationError) -> ConfigError:
    """The first problem of `exc`, naming the environment variable of the field it concerns."""
    errors = exc.errors(include_url=False)
    first = next((e for e in errors if e["type"] not in _CONSEQUENCES), errors[0])
    field, variable = _locate(section, first["loc"])
    return ConfigError(variable, _problem(first, field))


def variables_of(field_name: str, field: FieldInfo) -> tuple[str, ...]:
    """The environment variables a field reads, in order of preference; () for none."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return (alias,)
    if isinstance(alias, AliasChoices):
        return tuple(choice for choice in alias.choices if isinstance(choice, str))
    return ()


def _locate(section: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[FieldInfo | None, str]:
    """(the field, the variable to name) for an error's location, given by name or by alias."""
    if not loc:
        return None, section.__name__
    key = str(loc[0])
    fields = section.model_fields
    if key in fields:
        names = variables_of(key, fields[key])
        return fields[key], names[0] if names else key
    for name, field in fields.items():
        if key in variables_of(name, field):
            return field, key
    return None, key


def _problem(error: ErrorDetails, field: FieldInfo | None) -> str:
    kind = error["type"]
    context: dict[str, Any] = dict(error.get("ctx") or {})
    if kind in ("value_error", "assertion_error"):
        cause = context.get("error")
        if isinstance(cause, ConfigError):
            return cause.problem
        return str(cause) if cause is not None else error["msg"]
    template = _PROBLEMS.get(kind)
    if template is None:
        return error["msg"]  # pydantic's own words, which never quote the value
    limits = {key: _plain(context[key]) for key in ("ge", "gt", "le", "lt") if key in context}
    choices = ", ".join(str(c) for c in _literal_choices(field.annotation if field else None))
    return template.format(input=error.get("input"), choices=choices, **limits)


def _plain(limit: object) -> str:
    """1 rather than 1.0; 0.1 as it is."""
    if isinstance(limit, float) and limit.is_integer():
        return str(int(limit))
    return str(limit)


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    if annotation is None:
        return ()
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for member in typing.get_args(annotation):
            found = _literal_choices(member)
            if found:
                return found
    return ()
