"""The two kinds of failure, and the retry policy follows from which one a problem is."""

from __future__ import annotations


class PermanentError(Exception):
    """A message that can never succeed: no retry, recorded where an operator will see it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadMessage(PermanentError):
    """Missing, extra or malformed task arguments."""


class UnknownEntity(PermanentError):
    """An id that does not exist, or belongs to another tenant (the two are indistinguishable)."""

    def __init__(self, kind: str, entity_id: object) -> None:
        super().__init__(f"unknown_{kind}: {entity_id}")


class InvalidNodeConfig(PermanentError):
    def __init__(self, problem: str) -> None:
        super().__init__(f"invalid_node_config: {problem}")


class InvalidTenantSettings(PermanentError):
    """A known key of tenants.settings is malformed; `key` names it (e.g. quiet_hours.start)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid_tenant_settings: {key} {problem}")
        self.key = key
        self.problem = problem


class MissingPlaceholder(PermanentError):
    def __init__(self, name: str) -> None:
        super().__init__(f"missing_placeholder: {name}")


class TransientError(Exception):
    """Worth retrying with backoff: a remote service or the network misbehaved."""
