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
    """QUEUED -> SENT -> DELIVERED | UNDELIVERED | FAILED; a terminal state never goes back
    (contract Version 2). An inbound message is recorded as DELIVERED: it reached us."""

    QUEUED = "QUEUED"
    SENT = "SENT"
    FAILED = "FAILED"
    DELIVERED = "DELIVERED"
    UNDELIVERED = "UNDELIVERED"


# A message may move only to a status of a higher rank: receipts arrive out of order and twice.
MESSAGE_STATUS_RANK = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.UNDELIVERED: 2,
    MessageStatus.FAILED: 2,
}


class ConsentAction(StrEnum):
    """contact_consent_changes.action: the audit trail of opt-outs and opt-ins."""

    OPT_OUT = "OPT_OUT"
    OPT_IN = "OPT_IN"


def check_in(column: str, values: type[StrEnum]) -> str:
    """SQL for a CHECK constraint that keeps `column` inside an enum's values."""
    quoted = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({quoted})"
