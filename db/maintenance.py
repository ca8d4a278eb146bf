"""Scheduled maintenance's SQL (PostgreSQL): table statistics from pg_stat_user_tables, and
VACUUM / ANALYZE run outside any transaction under a lock timeout."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

# The tables the engine writes all day: scheduled maintenance and the report look at these.
HOT_TABLES = (
    "journey_contacts",
    "journey_node_executions",
    "messages",
    "contacts",
    "dispatch_lanes",
)
# SQLSTATE 55P03 lock_not_available: lock_timeout expired.
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class TableStats:
    table: str
    live_rows: int
    dead_rows: int
    changed_since_analyze: int
    last_vacuum: datetime | None  # manual or autovacuum, whichever was later
    last_analyze: datetime | None
    last_manual_vacuum: datetime | None
    last_autovacuum: datetime | None
    last_manual_analyze: datetime | None
    last_autoanalyze: datetime | None
    vacuum_count: int
    autovacuum_count: int


@dataclass(frozen=True)
class MaintenanceResult:
    table: str
    command: str
    ran: bool
    seconds: float
    detail: str = ""


STATS_SQL = text(
    """
    SELECT relname, n_live_tup, n_dead_tup, n_mod_since_analyze,
           GREATEST(last_vacuum, last_autovacuum) AS last_any_vacuum,
           GREATEST(last_analyze, last_autoanalyze) AS last_any_analyze,
           last_vacuum, last_autovacuum, last_analyze, last_autoanalyze,
           vacuum_count, autovacuum_count
      FROM pg_stat_user_tables
     WHERE schemaname = current_schema() AND relname = ANY(:tables)
     ORDER BY relname
    """
)


def table_stats(engine: Engine, tables: Sequence[str]) -> list[TableStats]:
    with engine.connect() as conn:
        rows = conn.execute(STATS_SQL, {"tables": list(tables)}).all()
    return [
        TableStats(
            table=r[0],
            live_rows=int(r[1]),
            dead_rows=int(r[2]),
            changed_since_analyze=int(r[3]),
            last_vacuum=r[4],
            last_analyze=r[5],
            last_manual_vacuum=r[6],
            last_autovacuum=r[7],
            last_manual_analyze=r[8],
            last_autoanalyze=r[9],
            vacuum_count=int(r[10]),
            autovacuum_count=int(r[11]),
        )
        for r in rows
    ]


def run_maintenance(
    engine: Engine,
    table: str,
    command: str,
    *,
    lock_timeout_ms: int,
    statement_timeout_ms: int,
) -> MaintenanceResult:
    """VACUUM (ANALYZE) or ANALYZE one table on an autocommit connection (VACUUM cannot run in
    a transaction block). A lock it cannot take within lock_timeout (autovacuum or DDL holds
    the table) skips the table until the next run instead of queueing behind the holder."""
    if command not in ("VACUUM", "ANALYZE"):
        raise ValueError(f"unknown maintenance command {command!r}")
    quoted = engine.dialect.identifier_preparer.quote_identifier(table)
    # TRUNCATE false: vacuum never takes the ACCESS EXCLUSIVE lock that returning empty pages
    # at the table's end needs, which would stall every reader and writer of a hot table.
    sql = (
        f"VACUUM (ANALYZE, TRUNCATE false) {quoted}" if command == "VACUUM" else f"ANALYZE {quoted}"
    )
    began = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # The pool reuses this connection: note its settings to give them back afterwards.
        saved = conn.execute(
            text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
        ).one()
        conn.execute(text(f"SET lock_timeout = {int(lock_timeout_ms)}"))
        conn.execute(text(f"SET statement_timeout = {int(statement_timeout_ms)}"))
        try:
            conn.execute(text(sql))
            ran, detail = True, ""
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            ran, detail = False, "lock_timeout: the table is locked (autovacuum or DDL)"
        finally:
            conn.execute(
                text(
                    "SELECT set_config('lock_timeout', :l, false), "
                    "set_config('statement_timeout', :s, false)"
                ),
                {"l": saved[0], "s": saved[1]},
            )
    return MaintenanceResult(table, command, ran, time.monotonic() - began, detail)
