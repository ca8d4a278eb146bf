"""The rules every settings section follows, in one place.

Each package (db, cache, tasks, worker) declares its environment variables as a `Section` in
its own settings.py: one field per variable, each with its FLAT variable name as
`validation_alias` and a docstring. This package depends on pydantic alone, so db and cache share
it without importing each other, and a number, a flag or a choice is read, checked and reported
the same way in every section.
"""

from envconfig.errors import ConfigError
from envconfig.section import Section
from envconfig.types import Flag, Lowercase, split_url

__all__ = ["ConfigError", "Flag", "Lowercase", "Section", "split_url"]
