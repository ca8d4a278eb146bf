"""The PostgreSQL connection budget a worker checks before it consumes a single message.

A worker may open children x (DB_POOL_SIZE + DB_MAX_OVERFLOW) connections: every prefork child
has its own engine and pool (db/engine.py), and the parent opens none of its own. (The parent
opens exactly one short-lived connection, here, to read the server's limits, and closes it
before the pool forks; it runs no tasks.) With the threads, gevent or solo pools all tasks share
one process and so one pool.

Two limits are compared:

* DB_CONNECTION_BUDGET (optional): the operator's share for this worker. Over it, the worker
  refuses to start; at 80 % or more, it warns.
* The server: max_connections minus the slots reserved for superusers. A worker that alone
  needs more can never get them all: it refuses to start. Connections other clients hold now
  (pg_stat_activity) only warn, because they change by the second (a rolling deploy's old
  worker, a migration, psql) and pools open connections lazily.

Behind PgBouncer (DB_PGBOUNCER=true) the server's max_connections says nothing about how many
client connections PgBouncer accepts, so only DB_CONNECTION_BUDGET is checked there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from db.settings import DbSettings

log = logging.getLogger("journey_worker.budget")

WARN_FRACTION = 0.8
SERVER_QUERY_TIMEOUT_SECONDS = 3

Level = Literal["ok", "warn", "refuse"]


@dataclass(frozen=True)
class ServerCapacity:
    """What the server allows non-superusers, and how many client connections are open now."""

    max_connections: int
    reserved: int
    in_use: int

    @property
    def usable(self) -> int:
        return self.max_connections - self.reserved


@dataclass(frozen=True)
class BudgetVerdict:
    level: Level
    needed: int
    message: str

    @property
    def refuses(self) -> bool:
        return self.level == "refuse"


def _near(needed: int, limit: int) -> bool:
    return needed >= WARN_FRACTION * limit


def check_budget(
    children: int,
    per_child: int,
    budget: int | None,
    server_max: int | None,
    in_use: int | None,
) -> BudgetVerdict:
    """Judge children x per_child connections against the limits that are known.

    budget: DB_CONNECTION_BUDGET, or None when unset.
    server_max: the connections the server gives non-superusers (max_connections minus the
    reserved slots), or None when unknown (database unreachable, PgBouncer, SQLite).
    in_use: client connections open on the server now, not counting the checker's own.
    """
    if children < 1 or per_child < 1:
        raise ValueError("children and per_child must be at least 1")
    needed = children * per_child
    who = f"{children} children" if children > 1 else "1 process"
    shape = f"{who} x {per_child} connections each"
    refusals: list[str] = []
    warnings: list[str] = []
    if budget is not None:
        if needed > budget:
            refusals.append(f"exceeds DB_CONNECTION_BUDGET={budget}")
        elif _near(needed, budget):
            warnings.append(f"uses {needed * 100 // budget}% of DB_CONNECTION_BUDGET={budget}")
    if server_max is not None:
        if needed > server_max:
            refusals.append(
                f"exceeds the {server_max} connections the server allows "
                "(max_connections minus superuser_reserved_connections)"
            )
        elif in_use is not None:
            free = max(server_max - in_use, 0)
            if needed > free:
                warnings.append(
                    f"exceeds the {free} connections free on the server now "
                    f"({in_use} of {server_max} in use)"
                )
            elif _near(needed, free):
                warnings.append(
                    f"uses {needed * 100 // free}% of the {free} connections free on the server "
                    f"({in_use} of {server_max} in use)"
                )
    if refusals:
        return BudgetVerdict(
            "refuse",
            needed,
            f"refusing to start: {needed} database connections ({shape}) "
            f"{' and '.join(refusals)}; lower the concurrency (-c or WORKER_CONCURRENCY) "
            "or DB_POOL_SIZE/DB_MAX_OVERFLOW, or raise the limit",
        )
    if warnings:
        return BudgetVerdict(
            "warn",
            needed,
            f"connection budget: {needed} database connections ({shape}) {'; '.join(warnings)}",
        )
    return BudgetVerdict(
        "ok", needed, f"connection budget: {needed} database connections ({shape})"
    )


def read_server_capacity(settings: DbSettings) -> ServerCapacity:
    """One short connection: the server's limits and its open client connections."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    timeout_ms = SERVER_QUERY_TIMEOUT_SECONDS * 1000
    connect_args: dict[str, object] = {
        "connect_timeout": SERVER_QUERY_TIMEOUT_SECONDS,
        "application_name": "journey-worker-budget",
    }
    if settings.session_settings == "startup":
        connect_args["options"] = f"-c statement_timeout={timeout_ms}"
    engine = create_engine(settings.url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT current_setting('max_connections')::int, "
                    "current_setting('superuser_reserved_connections')::int, "
                    # PostgreSQL 16+ reserves more slots for pg_use_reserved_connections.
                    "coalesce(current_setting('reserved_connections', true)::int, 0), "
                    "(SELECT count(*) FROM pg_stat_activity "
                    " WHERE backend_type = 'client backend')::int"
                )
            ).one()
    finally:
        engine.dispose()
    max_connections, superuser_reserved, reserved, clients = row
    # The checker's own connection is not the worker's competition.
    return ServerCapacity(max_connections, superuser_reserved + reserved, max(clients - 1, 0))


def connection_processes(concurrency: int, prefork: bool) -> int:
    """Processes that each hold a pool: one per prefork child, else the one worker process."""
    return max(concurrency, 1) if prefork else 1


def evaluate(
    concurrency: int, prefork: bool, db: DbSettings, connection_budget: int | None
) -> tuple[BudgetVerdict, str | None]:
    """The verdict for this worker, and a note when the server could not be asked.

    connection_budget: DB_CONNECTION_BUDGET (worker.settings.BudgetSettings), None when unset.
    """
    processes = connection_processes(concurrency, prefork)
    capacity: ServerCapacity | None = None
    note: str | None = None
    if db.is_sqlite:
        note = "SQLite database: only DB_CONNECTION_BUDGET is checked"
    elif db.pgbouncer:
        note = "DB_PGBOUNCER=true: the server's max_connections is not checked"
    else:
        try:
            capacity = read_server_capacity(db)
        except Exception as exc:  # unreachable, auth, timeout: the tasks will retry anyway
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            note = (
                f"could not read the server's max_connections ({reason}); "
                "starting anyway, tasks retry until the database answers"
            )
    verdict = check_budget(
        processes,
        db.connections_per_process,
        connection_budget,
        capacity.usable if capacity else None,
        capacity.in_use if capacity else None,
    )
    return verdict, note


def enforce(
    concurrency: int, prefork: bool, db: DbSettings, connection_budget: int | None
) -> BudgetVerdict:
    """Log the verdict (one line) and raise SystemExit(2) when the worker must not start."""
    verdict, note = evaluate(concurrency, prefork, db, connection_budget)
    if verdict.refuses:
        log.critical("journey-worker: %s", verdict.message)
        raise SystemExit(2)
    if note:
        log.warning("journey-worker: connection budget: %s", note)
    if verdict.level == "warn":
        log.warning("journey-worker: %s", verdict.message)
    else:
        log.info("journey-worker: %s", verdict.message)
    return verdict
