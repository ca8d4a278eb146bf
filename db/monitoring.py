"""The monitoring report's catalog queries: slow statements (pg_stat_statements), the performance
indexes' usage (pg_stat_user_indexes), connections (pg_stat_activity), journey contacts by status,
recent task failures and the hot tables' last vacuum and analyze. Each reads only, in a
transaction `reading` always rolls back, under a statement timeout; a section that cannot be read
here raises Unavailable saying why.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from db.clock import seconds_from_now
from db.indexes import PERFORMANCE_INDEXES
from db.maintenance import HOT_TABLES
from db.models import JourneyContact, TaskFailure
from db.statuses import ContactStatus

TOP = 10
STATEMENT_TIMEOUT = "15s"
ENABLE_PG_STAT_STATEMENTS = (
    "add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf, restart "
    "PostgreSQL, then run CREATE EXTENSION pg_stat_statements in this database"
)

Section = dict[str, Any]


class Unavailable(Exception):
    """A section that cannot be collected here; the message says why (and how to fix it)."""


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        try:
            if connection.dialect.name == "postgresql":
                # LOCAL: ends with the transaction, which is always rolled back below.
                connection.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
            yield connection
        finally:
            connection.rollback()


def _postgresql_only(connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        raise Unavailable(f"PostgreSQL only (database is {connection.dialect.name})")


def slowest_statements(connection: Connection) -> Section:
    _postgresql_only(connection)
    preload = connection.execute(text("SHOW shared_preload_libraries")).scalar_one()
    schema = connection.execute(
        text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_stat_statements'"
        )
    ).scalar()
    if "pg_stat_statements" not in preload:
        raise Unavailable(f"pg_stat_statements is not loaded: {ENABLE_PG_STAT_STATEMENTS}")
    if schema is None:
        raise Unavailable(
            "pg_stat_statements is loaded but not created here: "
            "run CREATE EXTENSION pg_stat_statements in this database"
        )
    rows = connection.execute(
        text(
            f'SELECT query, calls, mean_exec_time, total_exec_time, rows FROM "{schema}".'
            "pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) ORDER BY mean_exec_time DESC LIMIT :top"
        ),
        {"top": TOP},
    ).all()
    return {
        "rows": [
            {
                "query": " ".join((row.query or "").split()),
                "calls": int(row.calls),
                "mean_ms": round(float(row.mean_exec_time), 3),
                "total_ms": round(float(row.total_exec_time), 3),
                "rows": int(row.rows),
            }
            for row in rows
        ]
    }


def index_usage(connection: Connection) -> Section:
    _postgresql_only(connection)
    found = {
        row.name: row
        for row in connection.execute(
            text(
                "SELECT indexrelname AS name, relname AS table_name, idx_scan, idx_tup_read, "
                "idx_tup_fetch, pg_relation_size(indexrelid) AS size_bytes "
                "FROM pg_stat_user_indexes "
                "WHERE schemaname = current_schema() AND indexrelname = ANY(:names)"
            ),
            {"names": [spec.name for spec in PERFORMANCE_INDEXES]},
        )
    }
    # Counters count since the last reset: say since when, or idx_scan = 0 means little.
    since = connection.execute(
        text("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")
    ).scalar()
    rows = []
    for spec in PERFORMANCE_INDEXES:
        row = found.get(spec.name)
        rows.append(
            {
                "name": spec.name,
                "table": spec.table,
                "present": row is not None,
                "idx_scan": int(row.idx_scan) if row else None,
                "idx_tup_read": int(row.idx_tup_read) if row else None,
                "idx_tup_fetch": int(row.idx_tup_fetch) if row else None,
                "size_bytes": int(row.size_bytes) if row else None,
            }
        )
    return {"stats_since": since.isoformat() if since else None, "rows": rows}


def connections(connection: Connection) -> Section:
    _postgresql_only(connection)
    max_connections = int(connection.execute(text("SHOW max_connections")).scalar_one())
    reserved = int(connection.execute(text("SHOW superuser_reserved_connections")).scalar_one())
    # Client backends only: autovacuum, WAL writer and friends do not use up max_connections
    # the way sessions do. A null state is another role's session we may not inspect.
    client = "FROM pg_stat_activity WHERE backend_type = 'client backend'"
    by_state = {
        row[0]: int(row[1])
        for row in connection.execute(
            text(f"SELECT coalesce(state, 'unknown'), count(*) {client} GROUP BY 1 ORDER BY 2 DESC")
        )
    }
    by_application = {
        row[0]: int(row[1])
        for row in connection.execute(
            text(
                "SELECT coalesce(nullif(application_name, ''), '(none)'), count(*) "
                f"{client} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {TOP}"
            )
        )
    }
    this_database = connection.execute(
        text(f"SELECT count(*) {client} AND datname = current_database()")
    ).scalar_one()
    return {
        "in_use": sum(by_state.values()),
        "max_connections": max_connections,
        "superuser_reserved": reserved,
        "this_database": int(this_database),
        "by_state": by_state,
        "by_application": by_application,
    }


def _prefix(column: ColumnElement[str], separator: str, dialect: str) -> ColumnElement[str]:
    """The text before the first `separator` (all of it if there is none)."""
    if dialect == "postgresql":
        return func.split_part(column, separator, 1)
    return func.substr(column, 1, func.instr(column + separator, separator) - 1)


def journey_contacts(connection: Connection) -> Section:
    jc = JourneyContact.__table__
    counted = dict.fromkeys((status.value for status in ContactStatus), 0)
    for status, count in connection.execute(
        select(jc.c.status, func.count()).group_by(jc.c.status)
    ):
        counted[status] = int(count)
    # Reasons carry details ("invalid_node_config: ...", "node_not_found: <id>"): group by the
    # kind before the colon, and show one full reason as an example.
    kind = _prefix(jc.c.status_reason, ":", connection.dialect.name).label("reason")
    failed = connection.execute(
        select(kind, func.count().label("n"), func.min(jc.c.status_reason).label("example"))
        .where(jc.c.status == ContactStatus.FAILED.value)
        .group_by(kind)
        .order_by(func.count().desc(), kind)
        .limit(TOP)
    ).all()
    return {
        "total": sum(counted.values()),
        "by_status": counted,
        "failed_reasons": [
            {"reason": row.reason or "(none)", "count": int(row.n), "example": row.example}
            for row in failed
        ],
    }


def task_failures(connection: Connection) -> Section:
    tf = TaskFailure.__table__
    recent = tf.c.created_at >= seconds_from_now(-86400)
    first_line = func.substr(_prefix(tf.c.error, "\n", connection.dialect.name), 1, 200)
    error = first_line.label("error")
    rows = connection.execute(
        select(
            tf.c.task_name,
            error,
            func.count().label("n"),
            func.max(tf.c.created_at).label("last_at"),
        )
        .where(recent)
        .group_by(tf.c.task_name, error)
        .order_by(func.count().desc(), tf.c.task_name)
        .limit(TOP)
    ).all()
    total = connection.execute(select(func.count()).where(recent)).scalar_one()
    by_task = {
        row[0]: int(row[1])
        for row in connection.execute(
            select(tf.c.task_name, func.count())
            .where(recent)
            .group_by(tf.c.task_name)
            .order_by(func.count().desc())
        )
    }
    return {
        "window_hours": 24,
        "total": int(total),
        "by_task": by_task,
        "top": [
            {
                "task": row.task_name,
                "error": row.error,
                "count": int(row.n),
                "last_at": _iso(row.last_at),
            }
            for row in rows
        ],
    }


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value) if value else None


def table_maintenance(connection: Connection) -> Section:
    """When each hot table was last vacuumed and analyzed (by hand or by beat's maintenance,
    or by autovacuum), and its dead rows: is maintenance keeping up?"""
    _postgresql_only(connection)
    found = connection.execute(
        text(
            "SELECT relname, n_live_tup, n_dead_tup, n_mod_since_analyze, last_vacuum, "
            "last_autovacuum, last_analyze, last_autoanalyze FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema() AND relname = ANY(:tables) ORDER BY relname"
        ),
        {"tables": list(HOT_TABLES)},
    )
    rows = []
    for r in found:
        vacuum_by, vacuum_at = _latest(("manual", r.last_vacuum), ("auto", r.last_autovacuum))
        analyze_by, analyze_at = _latest(("manual", r.last_analyze), ("auto", r.last_autoanalyze))
        rows.append(
            {
                "table": r.relname,
                "live_rows": int(r.n_live_tup),
                "dead_rows": int(r.n_dead_tup),
                "changed_since_analyze": int(r.n_mod_since_analyze),
                "last_vacuum": _iso(vacuum_at),
                "last_vacuum_by": vacuum_by,
                "last_analyze": _iso(analyze_at),
                "last_analyze_by": analyze_by,
            }
        )
    return {"rows": rows}


def _latest(*candidates: tuple[str, datetime | None]) -> tuple[str | None, datetime | None]:
    dated = [(at, by) for by, at in candidates if at is not None]
    if not dated:
        return None, None
    at, by = max(dated)
    return by, at
