"""`journey-worker report`: the monitoring report, every operator check in one command.

Sections (the keys of the JSON form): statements (pg_stat_statements), indexes (the twelve, from
pg_stat_user_indexes), connections, cache, queue, journey_contacts, failures, maintenance (last
vacuum and analyze of the hot tables). Every section is
collected on its own: one that cannot be (extension absent, Redis down, SQLite) is
{"unavailable": "<reason>"} and the others still appear. The report only reads; each database
section runs in its own transaction, rolled back, under a statement timeout.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from sqlalchemy import Connection, Engine, text

from db import monitoring
from db.monitoring import TOP, Section, Unavailable
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
# kombu's Redis transport keeps priority n != 0 messages in "<queue>\x06\x16<n>" lists.
REDIS_PRIORITY_SEPARATOR = "\x06\x16"
REDIS_PRIORITY_STEPS = (3, 6, 9)


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
        "statements": monitoring.slowest_statements,
        "indexes": monitoring.index_usage,
        "connections": monitoring.connections,
        "journey_contacts": monitoring.journey_contacts,
        "failures": monitoring.task_failures,
        "maintenance": monitoring.table_maintenance,
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


def _in_db(engine: Engine, section: Callable[[Connection], Section]) -> Section:
    with monitoring.reading(engine) as connection:
        return section(connection)


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


# Rendering: rich tables, as plain text (no colour, no markup: values may hold brackets).

Renderable = str | Table


def render_text(report: Mapping[str, Any], width: int = 200) -> str:
    console = Console(
        file=io.StringIO(),
        width=width,
        color_system=None,
        markup=False,
        highlight=False,
        emoji=False,
    )
    titles = {
        "statements": f"Slowest statements (pg_stat_statements, top {TOP} by mean time)",
        "indexes": "Index usage, the twelve performance indexes (pg_stat_user_indexes)",
        "connections": "Connections",
        "cache": "Cache",
        "queue": f"Queue {DEFAULT_QUEUE}",
        "journey_contacts": "Journey contacts by status",
        "failures": f"Task failures, last 24 h (top {TOP})",
        "maintenance": "Vacuum and analyze of the hot tables (pg_stat_user_tables)",
    }
    renderers: dict[str, Callable[[Section], list[Renderable]]] = {
        "statements": _render_statements,
        "indexes": _render_indexes,
        "connections": _render_connections,
        "cache": _render_cache,
        "queue": _render_queue,
        "journey_contacts": _render_journey_contacts,
        "failures": _render_failures,
        "maintenance": _render_maintenance,
    }
    console.print(f"journey-worker report, {report['generated_at']}", soft_wrap=True)
    for name in SECTIONS:
        section = report[name]
        console.print()
        console.print(f"== {titles[name]}", soft_wrap=True)
        items = (
            [f"unavailable: {section['unavailable']}"]
            if "unavailable" in section
            else renderers[name](section)
        )
        for item in items:
            if isinstance(item, str):
                console.print(f"  {item}" if item else "", soft_wrap=True)
            else:
                console.print(Padding(item, (0, 0, 0, 2)))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in text.splitlines())


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: frozenset[int] = frozenset()
) -> Table:
    """Numbers (and columns in `right`) right-aligned; None shows as '-'."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, header in enumerate(headers):
        numeric = i in right or (
            bool(rows) and all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        )
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    return table


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


def _render_statements(section: Section) -> list[Renderable]:
    if not section["rows"]:
        return ["no statements recorded yet"]
    return [
        _table(
            ("mean ms", "calls", "total ms", "rows", "query"),
            [
                (r["mean_ms"], r["calls"], r["total_ms"], r["rows"], _clip(r["query"], 90))
                for r in section["rows"]
            ],
        )
    ]


def _render_indexes(section: Section) -> list[Renderable]:
    table = _table(
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
    return [table, f"counters since {since}"]


def _render_connections(section: Section) -> list[Renderable]:
    usable = section["max_connections"] - section["superuser_reserved"]
    share = section["in_use"] / usable if usable > 0 else 0.0
    states = ", ".join(f"{state} {count}" for state, count in section["by_state"].items())
    apps = ", ".join(f"{app} {count}" for app, count in section["by_application"].items())
    return [
        f"in use {section['in_use']} of max_connections {section['max_connections']} "
        f"({section['superuser_reserved']} reserved for superusers; {share:.0%} of the rest); "
        f"this database {section['this_database']}",
        f"by state: {states or '-'}",
        f"by application: {apps or '-'}",
    ]


def _render_cache(section: Section) -> list[Renderable]:
    groups = [g for g in ("node", "tenant") if g in section]
    table = _table(
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
    return [
        f"{section['backend']} (hits, misses, fills and invalidations are shared counters)",
        table,
    ]


def _render_queue(section: Section) -> list[Renderable]:
    line = f"{section['messages']:,} messages waiting ({section['broker']})"
    if "bulk_messages" in section:
        line += f"; {section['bulk_messages']:,} enrollment entry steps in {section['bulk_queue']}"
    if "unacked_all_queues" in section:
        line += f"; {section['unacked_all_queues']:,} delivered but unacknowledged (all queues)"
    if "consumers" in section:
        line += f"; {section['consumers']} consumers"
    return [line]


def _render_journey_contacts(section: Section) -> list[Renderable]:
    items: list[Renderable] = [
        _table(("status", "count"), list(section["by_status"].items())),
        f"total {section['total']:,}",
    ]
    if section["failed_reasons"]:
        items += [
            "",
            f"FAILED by reason (top {TOP})",
            _table(
                ("reason", "count", "example"),
                [
                    (r["reason"], r["count"], _clip(r["example"], 70))
                    for r in section["failed_reasons"]
                ],
            ),
        ]
    return items


def _render_failures(section: Section) -> list[Renderable]:
    if not section["total"]:
        return ["none"]
    by_task = ", ".join(f"{task} {count}" for task, count in section["by_task"].items())
    return [
        f"{section['total']:,} in the last 24 h: {by_task}",
        _table(
            ("count", "task", "error", "last"),
            [(r["count"], r["task"], _clip(r["error"], 70), r["last_at"]) for r in section["top"]],
        ),
    ]


def _render_maintenance(section: Section) -> list[Renderable]:
    def when(at: str | None, by: str | None) -> str:
        return f"{at} ({by})" if at else "never"

    return [
        _table(
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
    ]
