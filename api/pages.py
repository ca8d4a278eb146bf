"""GET endpoints that page through a tenant's rows (db/pages.py does the SQL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import Connection

from api.dependencies import ApiState, State, TenantId, decode_cursor, encode_cursor
from api.problems import PROBLEM_RESPONSES, not_found
from api.schemas import ExecutionOut, JourneyContactOut, JourneyOut, MessageOut, Page
from db import pages
from db.pages import MAX_PAGE_SIZE, Keyset
from db.statuses import ContactStatus

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)

Limit = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Rows per page, 1 to {MAX_PAGE_SIZE}.")
]
# The contract's path says {id}; the code says what the id is of.
JourneyContactId = Annotated[uuid.UUID, Path(alias="id", description="A journey contact's id.")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page; omit for the first."),
]


def _page(
    api: ApiState,
    listing: str,
    cursor: str | None,
    read: Callable[[Connection, Keyset | None], pages.Page],
    what: str,
) -> dict[str, Any]:
    after = decode_cursor(api, listing, cursor)
    try:
        with api.engine.connect() as conn:
            page = read(conn, after)
    except pages.NotFound:
        raise not_found(what) from None
    return {"items": page.rows, "next_cursor": encode_cursor(api, listing, page.next_key)}


@router.get("/journeys", response_model=Page[JourneyOut], summary="The tenant's journeys")
def list_journeys(
    api: State, tenant_id: TenantId, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """Oldest first, by (created_at, id)."""
    return _page(
        api,
        f"{tenant_id}/journeys",
        cursor,
        lambda conn, after: pages.journeys_page(conn, tenant_id, after, limit),
        "journey",
    )


@router.get(
    "/journeys/{journey_id}/contacts",
    response_model=Page[JourneyContactOut],
    summary="A journey's contacts",
)
def list_journey_contacts(
    api: State,
    tenant_id: TenantId,
    journey_id: uuid.UUID,
    status: Annotated[ContactStatus | None, Query(description="Only this status.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Oldest enrollment first, by (created_at, id); optionally one status only."""
    status_value = status.value if status is not None else None
    return _page(
        api,
        f"{tenant_id}/journeys/{journey_id}/contacts?status={status_value or ''}",
        cursor,
        lambda conn, after: pages.journey_contacts_page(
            conn, tenant_id, journey_id, status_value, after, limit
        ),
        "journey",
    )


@router.get(
    "/journey-contacts/{id}/executions",
    response_model=Page[ExecutionOut],
    summary="A journey contact's executions",
)
def list_executions(
    api: State,
    tenant_id: TenantId,
    journey_contact_id: JourneyContactId,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Newest first, by (created_at, id)."""
    return _page(
        api,
        f"{tenant_id}/journey-contacts/{journey_contact_id}/executions",
        cursor,
        lambda conn, after: pages.executions_page(
            conn, tenant_id, journey_contact_id, after, limit
        ),
        "journey contact",
    )


@router.get(
    "/journey-contacts/{id}/messages",
    response_model=Page[MessageOut],
    summary="A journey contact's messages",
)
def list_messages(
    api: State,
    tenant_id: TenantId,
    journey_contact_id: JourneyContactId,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The messages the journey contact's steps sent, newest step first."""
    return _page(
        api,
        f"{tenant_id}/journey-contacts/{journey_contact_id}/messages",
        cursor,
        lambda conn, after: pages.messages_page(conn, tenant_id, journey_contact_id, after, limit),
        "journey contact",
    )
