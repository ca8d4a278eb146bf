"""The base class of every settings section."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from envconfig.errors import config_error, variables_of


class Section(BaseSettings):
    """A group of settings read from FLAT environment variables, validated as a whole.

    `from_env(environ)` is the one way to read variables: from `environ`, or from os.environ
    when it is None. Unset and blank variables mean the default. Keyword construction
    (`DbSettings(pool_size=2)`, tests and the demo) gives exactly those values over the defaults
    and never reads the environment, so nothing a developer exported leaks into it. Both are
    validated alike, and a bad value raises ConfigError naming the variable, never a pydantic
    ValidationError (whose text would repeat the value, a URL's password included).
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        # Fields are given by attribute name (keywords) or by variable name (from_env).
        validate_by_name=True,
        validate_by_alias=True,
        # nan and inf are never a valid number of anything here.
        allow_inf_nan=False,
        validate_default=True,
        use_attribute_docstrings=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise config_error(type(self), exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keywords only; from_env passes the variables it read as keywords.
        return (init_settings,)

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every environment variable this section reads, in field order."""
        return tuple(
            variable
            for name, field in cls.model_fields.items()
            for variable in variables_of(name, field)
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """This section from `environ` (default os.environ); ConfigError names a bad variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for variable in cls.variables():
            raw = (env.get(variable) or "").strip()
            if raw:
                values[variable] = raw
        return cls(**values)
