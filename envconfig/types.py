"""Field types that read the same way in every section."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag(value: Any) -> Any:
    if isinstance(value, str):
        spelled = value.strip().lower()
        if spelled in _TRUE:
            return True
        if spelled in _FALSE:
            return False
        raise PydanticCustomError("bool_parsing", "Input should be true or false")
    return value


def _lowercase(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Flag = Annotated[bool, BeforeValidator(_flag)]
"""A boolean: 1, true, yes, on or 0, false, no, off, in any case."""

Lowercase = BeforeValidator(_lowercase)
"""For a choice (`Annotated[Literal[...], Lowercase]`): JSON and json are the same value."""


def split_url(raw: str) -> SplitResult:
    """urlsplit with the port checked. The error never repeats the URL: it may hold a password."""
    try:
        parts = urlsplit(raw)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise ValueError("not a valid URL (bad port or brackets)") from None
    return parts
