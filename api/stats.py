"""GET /v1/journeys/{journey_id}/stats (JSON) and .../stats.html (the funnel as a chart)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api import stats_page
from api.dependencies import State, TenantId
from api.problems import PROBLEM_RESPONSES, not_found
from api.schemas import JourneyStats
from db import stats
from db.stats import NodeCounts

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)


def _node(node_id: uuid.UUID, node_type: str | None, counts: NodeCounts) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "type": node_type,
        "reached": counts.reached,
        "executions": dict(counts.executions),
        "messages": dict(counts.messages),
    }


@router.get(
    "/journeys/{journey_id}/stats", response_model=JourneyStats, summary="A journey's funnel"
)
def journey_stats(
    api: State,
    tenant_id: TenantId,
    journey_id: uuid.UUID,
    days: Annotated[
        int, Query(ge=0, le=366, description="Also break the last N UTC days down (0: no).")
    ] = 0,
) -> dict[str, Any]:
    """Per node, in funnel order from the entry node: contacts that reached it, its executions
    and the messages they sent, by status. From the materialized view the refresh task keeps
    (STATS_REFRESH_INTERVAL_SECONDS): as of `refreshed_at`, not live."""
    try:
        with api.engine.connect() as conn:
            funnel = stats.read_funnel(conn, tenant_id, journey_id, days=days)
    except stats.JourneyNotFound:
        raise not_found("journey") from None
    types = {node.node_id: node.type for node in funnel.nodes}
    return {
        "journey_id": funnel.journey_id,
        "refreshed_at": funnel.refreshed_at,
        "nodes": [_node(node.node_id, node.type, node.counts) for node in funnel.nodes],
        "days": [
            {"day": day.day, "nodes": [_node(n, types.get(n), c) for n, c in day.nodes]}
            for day in funnel.days
        ],
    }


@router.get(
    "/journeys/{journey_id}/stats.html",
    response_class=HTMLResponse,
    summary="A journey's funnel as a chart (for a browser)",
)
def journey_stats_page(journey_id: uuid.UUID) -> HTMLResponse:
    """A page with no data in it: its script reads the key from the address's fragment
    (`#key=KEY`, which a browser never sends to any server) and fetches the JSON above with
    `Authorization: Bearer KEY`. So the page needs no key, and the data needs the usual one."""
    return HTMLResponse(stats_page.render(journey_id), headers=stats_page.HEADERS)
