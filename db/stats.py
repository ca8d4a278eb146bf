"""The per-node funnel: refreshing the materialized view of migration 0005, and reading it.

journey_node_daily_stats holds, per tenant, journey, node and UTC day: `reached` (journey contacts
that reached the node for the first time that day), `executions` and `messages` (JSON objects of
counts by status). PostgreSQL only.

Why the refresh never gets in anyone's way (docs/operations.md says more):
* REFRESH ... CONCURRENTLY takes an EXCLUSIVE lock on the view only, which readers' ACCESS SHARE
  does not conflict with: the API keeps reading the previous contents until the refresh commits.
  The base tables are only read (ACCESS SHARE), which blocks no insert or update of the engine.
* lock_timeout: if DDL holds the view, the refresh gives up instead of queueing and making every
  reader queue behind it.
* statement_timeout: a refresh is one long read; bounding it bounds how long it holds back
  vacuum's horizon on the busiest tables.
* An advisory lock makes a second concurrent refresh (two beat hosts, a slow run) a no-op.
The very first refresh after the migration populates an empty view and cannot be CONCURRENTLY:
it locks the view (not the tables) until it is done.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

VIEW = "journey_node_daily_stats"
# pg_try_advisory_xact_lock key of the refresh; the bytes spell "jwstats!".
REFRESH_LOCK_KEY = 0x6A77737461747321


@dataclass(frozen=True)
class RefreshResult:
    refreshed: bool  # False: another refresh held the lock, nothing was done
    concurrently: bool = False
    refreshed_at: datetime | None = None
    duration_ms: int = 0


def refresh(engine: Engine, *, statement_timeout_ms: int, lock_timeout_ms: int) -> RefreshResult:
    """Refresh the funnel view and record when, in one transaction."""
    with engine.begin() as conn:
        if not conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": REFRESH_LOCK_KEY}
        ).scalar_one():
            return RefreshResult(refreshed=False)
        conn.execute(text(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}"))
        conn.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
        populated = conn.execute(
            text("SELECT ispopulated FROM pg_matviews WHERE matviewname = :view"), {"view": VIEW}
        ).scalar_one()
        # The moment the refresh's snapshot is taken (READ COMMITTED: at its statement's start).
        started_at = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        began = time.perf_counter()
        how = "CONCURRENTLY " if populated else ""
        conn.execute(text(f"REFRESH MATERIALIZED VIEW {how}{VIEW}"))
        duration_ms = round((time.perf_counter() - began) * 1000)
        conn.execute(
            text(
                "INSERT INTO stats_refreshes (view_name, refreshed_at, duration_ms) "
                "VALUES (:view, :at, :ms) ON CONFLICT (view_name) DO UPDATE "
                "SET refreshed_at = EXCLUDED.refreshed_at, duration_ms = EXCLUDED.duration_ms"
            ),
            {"view": VIEW, "at": started_at, "ms": duration_ms},
        )
    return RefreshResult(True, bool(populated), started_at, duration_ms)


@dataclass
class NodeCounts:
    reached: int = 0
    executions: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)

    def add(self, reached: int, executions: Mapping[str, int], messages: Mapping[str, int]) -> None:
        self.reached += int(reached)
        self.executions.update({k: int(v) for k, v in executions.items()})
        self.messages.update({k: int(v) for k, v in messages.items()})


@dataclass(frozen=True)
class FunnelNode:
    node_id: uuid.UUID
    type: str
    counts: NodeCounts


@dataclass(frozen=True)
class FunnelDay:
    day: date
    nodes: list[tuple[uuid.UUID, NodeCounts]]


@dataclass(frozen=True)
class Funnel:
    journey_id: uuid.UUID
    refreshed_at: datetime | None  # None: never refreshed yet, every count is 0
    nodes: list[FunnelNode]
    days: list[FunnelDay]


class JourneyNotFound(LookupError):
    """Unknown journey, or another tenant's."""


def read_funnel(
    conn: Connection, tenant_id: uuid.UUID, journey_id: uuid.UUID, *, days: int = 0
) -> Funnel:
    """Every node of the journey in funnel order with its totals, and per day for the last
    `days` UTC days (0: none). Three short statements, each scoped to the tenant."""
    journey = conn.execute(
        text("SELECT entry_node_id FROM journeys WHERE id = :journey AND tenant_id = :tenant"),
        {"journey": journey_id, "tenant": tenant_id},
    ).one_or_none()
    if journey is None:
        raise JourneyNotFound
    nodes = conn.execute(
        text(
            "SELECT id, type, next_node_id, config FROM journey_nodes "
            "WHERE journey_id = :journey AND tenant_id = :tenant ORDER BY created_at, id"
        ),
        {"journey": journey_id, "tenant": tenant_id},
    ).all()
    refreshed_at = conn.execute(
        text(
            "SELECT r.refreshed_at FROM stats_refreshes r JOIN pg_matviews v "
            "ON v.matviewname = r.view_name WHERE r.view_name = :view AND v.ispopulated"
        ),
        {"view": VIEW},
    ).scalar_one_or_none()
    rows: list[Any] = []
    if refreshed_at is not None:
        rows = list(
            conn.execute(
                text(
                    f"SELECT node_id, day, reached, executions, messages FROM {VIEW} "
                    "WHERE tenant_id = :tenant AND journey_id = :journey ORDER BY day, node_id"
                ),
                {"journey": journey_id, "tenant": tenant_id},
            )
        )
    totals = {node.id: NodeCounts() for node in nodes}
    by_day: dict[date, dict[uuid.UUID, NodeCounts]] = {}
    last_days = _last_days(conn, days) if days else set()
    for node_id, day, reached, executions, messages in rows:
        if node_id not in totals:  # a node deleted since the refresh
            continue
        totals[node_id].add(reached, executions, messages)
        if day in last_days:
            by_day.setdefault(day, {}).setdefault(node_id, NodeCounts()).add(
                reached, executions, messages
            )
    order = funnel_order(journey.entry_node_id, [(n.id, n.next_node_id, n.config) for n in nodes])
    types = {node.id: node.type for node in nodes}
    return Funnel(
        journey_id=journey_id,
        refreshed_at=refreshed_at,
        nodes=[FunnelNode(node_id, types[node_id], totals[node_id]) for node_id in order],
        days=[
            FunnelDay(day, [(n, by_day[day][n]) for n in order if n in by_day[day]])
            for day in sorted(by_day)
        ],
    )


def _last_days(conn: Connection, days: int) -> set[date]:
    today = conn.execute(text("SELECT (now() AT TIME ZONE 'UTC')::date")).scalar_one()
    return {date.fromordinal(today.toordinal() - offset) for offset in range(days)}


def _targets(config: Any) -> Iterable[str]:
    """Node ids a config points at: any value under a key ending in node_id, at any depth
    (condition, split, wait_for_event and node types yet to come)."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key.endswith("node_id") and isinstance(value, str):
                yield value
            else:
                yield from _targets(value)
    elif isinstance(config, list):
        for item in config:
            yield from _targets(item)


def funnel_order(
    entry_node_id: uuid.UUID | None,
    nodes: list[tuple[uuid.UUID, uuid.UUID | None, Any]],
) -> list[uuid.UUID]:
    """Breadth first from the entry node along next_node_id and the configs' branches, so a
    funnel reads top to bottom; nodes nothing leads to follow in their stored order."""
    known = {node_id: (next_id, config) for node_id, next_id, config in nodes}
    ordered: list[uuid.UUID] = []
    seen: set[uuid.UUID] = set()
    queue = [entry_node_id] if entry_node_id in known else []
    while queue:
        node_id = queue.pop(0)
        if node_id is None or node_id in seen or node_id not in known:
            continue
        seen.add(node_id)
        ordered.append(node_id)
        next_id, config = known[node_id]
        queue.append(next_id)
        for target in _targets(config):
            try:
                queue.append(uuid.UUID(target))
            except ValueError:
                continue
    ordered.extend(node_id for node_id, *_ in nodes if node_id not in seen)
    return ordered
