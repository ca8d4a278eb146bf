"""journeys.maintain_tables: beat's VACUUM (ANALYZE) and ANALYZE of the hot tables, decided
from pg_stat_user_tables rather than run blindly. Autovacuum still does most of the work
(0013 tunes it per table); this catches what it leaves behind: a purge's or an import's
millions of dead rows, statistics gone stale after a bulk load."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from celery import shared_task

from db import maintenance
from db.engine import get_engine
from db.maintenance import HOT_TABLES, TableStats
from tasks import names
from tasks.base import JourneyTask
from tasks.settings import EngineSettings, engine_settings

log = logging.getLogger("journey_worker.maintenance")


@dataclass(frozen=True)
class Decision:
    table: str
    command: str | None  # "VACUUM" (with ANALYZE), "ANALYZE", or None: nothing to do
    why: str


def decide(stats: TableStats, settings: EngineSettings) -> Decision:
    """VACUUM (ANALYZE) when dead rows pile up: at least MAINTENANCE_VACUUM_MIN_DEAD_ROWS of
    them and MAINTENANCE_VACUUM_DEAD_RATIO of the table; else ANALYZE when enough rows changed
    since the last analyze; else nothing."""
    total = stats.live_rows + stats.dead_rows
    dead_ratio = stats.dead_rows / total if total else 0.0
    if (
        stats.dead_rows >= settings.maintenance_vacuum_min_dead_rows
        and dead_ratio >= settings.maintenance_vacuum_dead_ratio
    ):
        return Decision(stats.table, "VACUUM", f"{stats.dead_rows} dead rows ({dead_ratio:.1%})")
    changed = stats.changed_since_analyze
    changed_ratio = changed / stats.live_rows if stats.live_rows else (1.0 if changed else 0.0)
    if (
        changed >= settings.maintenance_analyze_min_changed_rows
        and changed_ratio >= settings.maintenance_analyze_changed_ratio
    ):
        return Decision(
            stats.table, "ANALYZE", f"{changed} rows changed since analyze ({changed_ratio:.1%})"
        )
    return Decision(stats.table, None, f"{stats.dead_rows} dead, {changed} changed: fine")


def plan(stats: Sequence[TableStats], settings: EngineSettings) -> list[Decision]:
    return [decide(table, settings) for table in stats]


_settings = engine_settings()
# Longer than the statements may run, so the database's timeout, not Celery's, ends a slow one.
_SOFT_LIMIT = _settings.maintenance_statement_timeout_ms / 1000 * len(HOT_TABLES) + 60


@shared_task(
    bind=True,
    base=JourneyTask,
    name=names.MAINTAIN_TABLES,
    # The next tick is the retry; a failure is recorded in task_failures.
    max_retries=0,
    soft_time_limit=_SOFT_LIMIT,
    time_limit=_SOFT_LIMIT + 60,
)
def maintain_tables(self: JourneyTask) -> dict[str, object]:
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        return {"ran": [], "reason": "maintenance needs PostgreSQL"}
    settings = engine_settings()
    ran: list[dict[str, object]] = []
    for decision in plan(maintenance.table_stats(engine, HOT_TABLES), settings):
        if decision.command is None:
            continue
        result = maintenance.run_maintenance(
            engine,
            decision.table,
            decision.command,
            lock_timeout_ms=settings.maintenance_lock_timeout_ms,
            statement_timeout_ms=settings.maintenance_statement_timeout_ms,
        )
        if result.ran:
            log.info(
                "maintenance %s %s in %.1f s: %s",
                result.command,
                result.table,
                result.seconds,
                decision.why,
            )
        else:
            log.warning(
                "maintenance skipped %s %s: %s", result.command, result.table, result.detail
            )
        ran.append(
            {
                "table": result.table,
                "command": result.command,
                "ran": result.ran,
                "seconds": round(result.seconds, 3),
                "why": decision.why if result.ran else result.detail,
            }
        )
    return {"ran": ran}
