"""`journey-worker report`: the seed's "Monitoring Recommendations" as one command.

Sections (the keys of the JSON form): statements (pg_stat_statements), indexes (the twelve, from
pg_stat_user_indexes), connections, cache, queue, journey_contacts, failures, maintenance (last
vacuum and analyze of the hot tables). Every section is
collected on its own: one that cannot be (extension absent, Redis down, SQLite) is
{"unavailable": "<reason>"} and the others still appear. The report only reads; each database
section runs in its own transaction, rolled back, under a statement timeout.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from db.clock import seconds_from_now
from db.indexes import PERFORMANCE_INDEXES
from db.maintenance import HOT_TABLES
from db.models import JourneyContact, TaskFailure
from db.statuses import ContactStatus
from tasks.names import BULK_QUEUE, DEFAULT_QUEUE
from worker.health import reason, redacted

SECTIONS = (
    "statements",
    "indexes",
    "connections",
    "cache",
    "queue",
    "journey_contacts",
    "failures",
    "maintenance",
)
TOP = 10
STATEMENT_TIMEOUT = "15s"
# kombu's Redis transport keeps priority n != 0 messages in "<queue>\x06\x16<n>" lists.
REDIS_PRIORITY_SEPARATOR = "\x06\x16"
REDIS_PRIORITY_STEPS = (3, 6, 9)
ENABLE_PG_STAT_STATEMENTS = (
    "add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf, restart "
    "PostgreSQL, then run CREATE EXTENSION pg_stat_statements in this database"
)

Section = dict[str, Any]


class Unavailable(Exception):
    """A section that cannot be collected here; the message says why (and how to fix it)."""


# Collection.


def collect(
    engine: Engine | None,
    environ: Mapping[str, str] | None = None,
    *,
    engine_error: str | None = None,
) -> dict[str, Any]:
    """The whole report as a JSON-able dict: generated_at plus one entry per SECTIONS name."""
    env = os.environ if environ is None else environ
    report: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    db_problem = engine_error
    if engine is not None and db_problem is None:
        # One probe instead of five connect timeouts when the database is away.
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            db_problem = f"database unreachable: {reason(exc)}"
    database_sections: dict[str, Callable[[Connection], Section]] = {
        "statements": _statements,
        "indexes": _indexes,
        "connections": _connections,
        "journey_contacts": _journey_contacts,
        "failures": _failures,
        "maintenance": _maintenance,
    }
    for name in SECTIONS:
        if name in database_sections:
            if engine is None or db_problem is not None:
                report[name] = {"unavailable": db_problem or "no database configured"}
            else:
                report[name] = _guarded(functools.partial(_in_db, engine, database_sections[name]))
        elif name == "cache":
            report[name] = _guarded(lambda: _cache(env))
        else:
            report[name] = _guarded(lambda: _queue(env))
    return report


def _guarded(build: Callable[[], Section]) -> Section:
    try:
        return build()
    except Unavailable as exc:
        return {"unavailable": str(exc)}
    except Exception as exc:
        return {"unavailable": reason(exc)}


@contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        try:
            if connection.dialect.name == "postgresql":
                # LOCAL: ends with the transaction, which is always rolled back below.
                connection.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
            yield connection
        finally:
            connection.rollback()


def _in_db(engine: Engine, section: Callable[[Connection], Section]) -> Section:
    with _reading(engine) as connection:
        return section(connection)


def _postgresql_only(connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        raise Unavailable(f"PostgreSQL only (database is {connection.dialect.name})")


def _statements(connection: Connection) -> Section:
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


def _indexes(connection: Connection) -> Section:
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


def _connections(connection: Connection) -> Section:
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


def _journey_contacts(connection: Connection) -> Section:
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


def _failures(connection: Connection) -> Section:
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


def _maintenance(connection: Connection) -> Section:
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


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value) if value else None


def _cache(env: Mapping[str, str]) -> Section:
    from cache import CacheSettings, get_cache
    from cache.journey_cache import STAT_GROUPS

    settings = CacheSettings.from_env(env)
    url = settings.redis_url
    if url is None:
        raise Unavailable(
            "in-process cache: every process counts its own hits; set REDIS_URL to share them"
        )
    cache = get_cache()
    try:
        cache.redis.ping()
    except Exception as exc:  # stats() would quietly read zeros; say why instead
        raise Unavailable(f"Redis at {redacted(url)}: {reason(exc)}") from exc
    stats = cache.stats()
    section: Section = {"backend": f"Redis at {redacted(url)}"}
    for group in STAT_GROUPS:
        counters: dict[str, Any] = dict(stats[group])
        lookups = counters["hits"] + counters["misses"]
        counters["hit_ratio"] = round(counters["hits"] / lookups, 4) if lookups else None
        section[group] = counters
    return section


def _queue(env: Mapping[str, str]) -> Section:
    from worker.settings import WorkerSettings

    settings = WorkerSettings.from_env(env)
    url = settings.broker
    if settings.embedded_broker:
        raise Unavailable("n/a for the embedded filesystem broker")
    try:
        return _queue_depth(url)
    except Unavailable:
        raise
    except Exception as exc:
        raise Unavailable(f"broker at {redacted(url)}: {reason(exc)}") from exc


def _queue_depth(url: str) -> Section:
    scheme = url.split("://", 1)[0]
    if scheme in ("redis", "rediss"):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        try:
            pipe = client.pipeline(transaction=False)
            for queue in (DEFAULT_QUEUE, BULK_QUEUE):
                for key in [queue] + [
                    f"{queue}{REDIS_PRIORITY_SEPARATOR}{step}" for step in REDIS_PRIORITY_STEPS
                ]:
                    pipe.llen(key)
            pipe.hlen("unacked")
            *lengths, unacked = pipe.execute()
        finally:
            client.close()
        per_queue = len(REDIS_PRIORITY_STEPS) + 1
        return {
            "broker": f"Redis at {redacted(url)}",
            "queue": DEFAULT_QUEUE,
            "messages": int(sum(lengths[:per_queue])),
            "bulk_queue": BULK_QUEUE,
            "bulk_messages": int(sum(lengths[per_queue:])),
            # Delivered to a worker, not yet acknowledged; kombu keeps one hash for all queues.
            "unacked_all_queues": int(unacked),
        }
    if scheme in ("amqp", "amqps", "pyamqp"):
        from kombu import Connection

        with Connection(url, connect_timeout=3) as connection:
            channel = connection.default_channel
            try:
                _, messages, consumers = channel.queue_declare(queue=DEFAULT_QUEUE, passive=True)
            except Exception as exc:
                if getattr(exc, "code", None) == 404:
                    raise Unavailable(
                        f"queue {DEFAULT_QUEUE} does not exist on the broker yet "
                        "(a worker declares it when it starts)"
                    ) from exc
                raise
            try:
                _, bulk_messages, _ = channel.queue_declare(queue=BULK_QUEUE, passive=True)
            except Exception:
                bulk_messages = 0
        return {
            "broker": f"RabbitMQ at {redacted(url)}",
            "queue": DEFAULT_QUEUE,
            "messages": int(messages),
            "consumers": int(consumers),
            "bulk_queue": BULK_QUEUE,
            "bulk_messages": int(bulk_messages),
        }
    raise Unavailable(f"n/a for a {scheme} broker")


# Rendering.


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    indent: str = "  ",
    right: frozenset[int] = frozenset(),
) -> list[str]:
    """Aligned columns: numbers (and columns in `right`) right-aligned; None shows as '-'."""
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [
        i in right
        or (all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows))
        for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def fmt(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return [fmt(headers), *(fmt(row) for row in cells)]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _size(size_bytes: int | None) -> str | None:
    if size_bytes is None:
        return None
    if size_bytes < 1024:
        return f"{size_bytes} B"
    size = size_bytes / 1024
    for unit in ("kB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _clip(value: str | None, width: int) -> str:
    value = value or ""
    return value if len(value) <= width else value[: width - 3] + "..."


def render_text(report: Mapping[str, Any]) -> str:
    out = [f"journey-worker report, {report['generated_at']}"]
    titles = {
        "statements": f"Slowest statements (pg_stat_statements, top {TOP} by mean time)",
        "indexes": "Index usage, the seed's twelve (pg_stat_user_indexes)",
        "connections": "Connections",
        "cache": "Cache",
        "queue": f"Queue {DEFAULT_QUEUE}",
        "journey_contacts": "Journey contacts by status",
        "failures": f"Task failures, last 24 h (top {TOP})",
        "maintenance": "Vacuum and analyze of the hot tables (pg_stat_user_tables)",
    }
    renderers: dict[str, Callable[[Section], list[str]]] = {
        "statements": _render_statements,
        "indexes": _render_indexes,
        "connections": _render_connections,
        "cache": _render_cache,
        "queue": _render_queue,
        "journey_contacts": _render_journey_contacts,
        "failures": _render_failures,
        "maintenance": _render_maintenance,
    }
    for name in SECTIONS:
        section = report[name]
        out += ["", f"== {titles[name]}"]
        if "unavailable" in section:
            out.append(f"  unavailable: {section['unavailable']}")
        else:
            out += renderers[name](section)
    return "\n".join(out)


def _render_maintenance(section: Section) -> list[str]:
    def when(at: str | None, by: str | None) -> str:
        return f"{at} ({by})" if at else "never"

    return _table(
        ("table", "live", "dead", "changed", "last vacuum", "last analyze"),
        [
            (
                r["table"],
                r["live_rows"],
                r["dead_rows"],
                r["changed_since_analyze"],
                when(r["last_vacuum"], r["last_vacuum_by"]),
                when(r["last_analyze"], r["last_analyze_by"]),
            )
            for r in section["rows"]
        ],
    )


def _render_statements(section: Section) -> list[str]:
    if not section["rows"]:
        return ["  no statements recorded yet"]
    return _table(
        ("mean ms", "calls", "total ms", "rows", "query"),
        [
            (r["mean_ms"], r["calls"], r["total_ms"], r["rows"], _clip(r["query"], 90))
            for r in section["rows"]
        ],
    )


def _render_indexes(section: Section) -> list[str]:
    lines = _table(
        ("index", "table", "idx_scan", "idx_tup_read", "idx_tup_fetch", "size"),
        [
            (
                r["name"],
                r["table"],
                r["idx_scan"],
                r["idx_tup_read"],
                r["idx_tup_fetch"],
                _size(r["size_bytes"]) if r["present"] else "MISSING",
            )
            for r in section["rows"]
        ],
        right=frozenset({5}),
    )
    since = section["stats_since"] or "the cluster's start (never reset)"
    return [*lines, f"  counters since {since}"]


def _render_connections(section: Section) -> list[str]:
    usable = section["max_connections"] - section["superuser_reserved"]
    share = section["in_use"] / usable if usable > 0 else 0.0
    states = ", ".join(f"{state} {count}" for state, count in section["by_state"].items())
    apps = ", ".join(f"{app} {count}" for app, count in section["by_application"].items())
    return [
        f"  in use {section['in_use']} of max_connections {section['max_connections']} "
        f"({section['superuser_reserved']} reserved for superusers; {share:.0%} of the rest); "
        f"this database {section['this_database']}",
        f"  by state: {states or '-'}",
        f"  by application: {apps or '-'}",
    ]


def _render_cache(section: Section) -> list[str]:
    groups = [g for g in ("node", "tenant") if g in section]
    lines = [f"  {section['backend']} (hits, misses, fills and invalidations are shared counters)"]
    lines += _table(
        ("group", "hits", "misses", "hit ratio", "fills", "invalidations", "stale refusals"),
        [
            (
                g,
                section[g]["hits"],
                section[g]["misses"],
                _ratio(section[g]["hit_ratio"]),
                section[g]["fills"],
                section[g]["invalidations"],
                section[g]["stale_fill_refusals"],
            )
            for g in groups
        ],
        right=frozenset({3}),
    )
    return lines


def _render_queue(section: Section) -> list[str]:
    line = f"  {section['messages']:,} messages waiting ({section['broker']})"
    if "bulk_messages" in section:
        line += f"; {section['bulk_messages']:,} enrollment entry steps in {section['bulk_queue']}"
    if "unacked_all_queues" in section:
        line += f"; {section['unacked_all_queues']:,} delivered but unacknowledged (all queues)"
    if "consumers" in section:
        line += f"; {section['consumers']} consumers"
    return [line]


def _render_journey_contacts(section: Section) -> list[str]:
    lines = _table(("status", "count"), list(section["by_status"].items()))
    lines.append(f"  total {section['total']:,}")
    if section["failed_reasons"]:
        lines += ["", f"  FAILED by reason (top {TOP})"]
        lines += _table(
            ("reason", "count", "example"),
            [(r["reason"], r["count"], _clip(r["example"], 70)) for r in section["failed_reasons"]],
        )
    return lines


def _render_failures(section: Section) -> list[str]:
    if not section["total"]:
        return ["  none"]
    by_task = ", ".join(f"{task} {count}" for task, count in section["by_task"].items())
    lines = [f"  {section['total']:,} in the last 24 h: {by_task}"]
    lines += _table(
        ("count", "task", "error", "last"),
        [(r["count"], r["task"], _clip(r["error"], 70), r["last_at"]) for r in section["top"]],
    )
    return lines
