"""Status vocabularies of the upstream contract, enforced by CHECK constraints."""

from enum import StrEnum


class TenantStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"


class JourneyStatus(StrEnum):
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    ARCHIVED = "ARCHIVED"


class ContactStatus(StrEnum):
    """journey_contacts.status."""

    ACTIVE = "ACTIVE"  # a node is queued or running
    WAITING = "WAITING"  # a wait is pending (due_at says when)
    PAUSED = "PAUSED"  # held: tenant suspended or journey not active
    COMPLETED = "COMPLETED"
    EXITED = "EXITED"
    FAILED = "FAILED"


# Statuses in which a contact is still on the journey (one such row per contact and journey).
OPEN_CONTACT_STATUSES = (ContactStatus.ACTIVE, ContactStatus.WAITING, ContactStatus.PAUSED)


class ExecutionStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"


class MessageDirection(StrEnum):
    OUTBOUND = "OUTBOUND"
    INBOUND = "INBOUND"


class MessageStatus(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    FAILED = "FAILED"


def check_in(column: str, values: type[StrEnum]) -> str:
    """SQL for a CHECK constraint that keeps `column` inside an enum's values."""
    quoted = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({quoted})"
