"""Counting one pass: statements (SQLAlchemy events, with kind and table), wire round trips
(libpq trace), Redis round trips (a wrapped client), cache lookups, and pg_stat_statements as a
cross-check when the server preloads it."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import Engine, text

from bench.seed import BenchJourney, Walker
from bench.walkers import StepFn, walk
from cache import JourneyCache
from db.instrumentation import StatementCounter, WireTrace

_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?([a-z_]+)\"?", re.IGNORECASE)
_WRITES = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?([a-z_]+)\"?", re.IGNORECASE)


class StatementTally(StatementCounter):
    """db.instrumentation.StatementCounter, plus (kind, table) pairs and per-step marks."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.pairs: Counter[tuple[str, str]] = Counter()
        self._mark = 0

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        super()._before(conn, cursor, statement, *args)
        kind = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        if kind == "WITH":
            # Data-modifying CTEs: name every write the one statement carries.
            writes = [
                f"{verb.split()[0].upper()} {table.lower()}"
                for verb, table in _WRITES.findall(statement)
            ]
            target = "[" + ", ".join(writes) + "]" if writes else "?"
        else:
            match = _TABLE.search(statement)
            target = match.group(1).lower() if match else "?"
        with self._lock:
            self.pairs[(kind, target)] += 1

    def since_mark(self) -> int:
        """Statements since the previous call."""
        with self._lock:
            delta, self._mark = self.total - self._mark, self.total
        return delta


class RedisCallCounter:
    """Counts every round trip of one redis-py client: commands (EVALSHA, SCRIPT LOAD, ...) and
    pipeline executions (one round trip each, however many commands they carry)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.commands: Counter[str] = Counter()
        self.pipelines = 0

    @property
    def total(self) -> int:
        return sum(self.commands.values()) + self.pipelines

    def __enter__(self) -> RedisCallCounter:
        original_command = self.client.execute_command
        original_pipeline = self.client.pipeline

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            self.commands[str(args[0]).upper()] += 1
            return original_command(*args, **kwargs)

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = original_pipeline(*args, **kwargs)
            original_execute = pipe.execute

            def execute(*eargs: Any, **ekwargs: Any) -> Any:
                self.pipelines += 1
                return original_execute(*eargs, **ekwargs)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        self.client.execute_command = execute_command  # type: ignore[method-assign]
        self.client.pipeline = pipeline  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("execute_command", "pipeline"):
            with suppress(AttributeError):
                delattr(self.client, name)


@dataclass
class Counts:
    """What one counted pass of a mode did, per node execution."""

    steps: int = 0
    statements: int = 0
    commits: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_table: Counter[str] = field(default_factory=Counter)
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_node_type: dict[str, list[int]] = field(default_factory=dict)
    node_tenant_statements: int = 0
    redis_roundtrips: int = 0
    redis_commands: Counter[str] = field(default_factory=Counter)
    wire_roundtrips: int | None = None
    wire_queries: Counter[str] = field(default_factory=Counter)
    wire_note: str = ""
    cache_hits: int = 0
    cache_misses: int = 0

    def per_node(self, value: float) -> float:
        return value / self.steps if self.steps else 0.0

    @property
    def statements_per_node(self) -> float:
        return self.per_node(self.statements)

    @property
    def formula_roundtrips_per_node(self) -> float:
        """The issue's definition: statements + commits (no pipeline here)."""
        return self.per_node(self.statements + self.commits)

    @property
    def wire_roundtrips_per_node(self) -> float | None:
        return None if self.wire_roundtrips is None else self.per_node(self.wire_roundtrips)

    @property
    def cache_hit_ratio(self) -> float | None:
        lookups = self.cache_hits + self.cache_misses
        return self.cache_hits / lookups if lookups else None


def cache_lookups(cache: JourneyCache) -> tuple[int, int]:
    stats = cache.stats()
    return (
        stats["node"]["hits"] + stats["tenant"]["hits"],
        stats["node"]["misses"] + stats["tenant"]["misses"],
    )


def count_pass(
    engine: Engine,
    step_fn: StepFn,
    journey: BenchJourney,
    walkers: Sequence[Walker],
    cache: JourneyCache | None,
) -> Counts:
    """Walk with every counter on: statements, commits, the wire, Redis and the cache stats."""
    counts = Counts()
    tally = StatementTally(engine)
    redis_counter = RedisCallCounter(cache.redis) if cache is not None else None
    before = cache_lookups(cache) if cache is not None else (0, 0)

    def after_step(node_type: str) -> None:
        counts.by_node_type.setdefault(node_type, []).append(tally.since_mark())

    with WireTrace(engine) as wire, tally:
        if redis_counter is not None:
            with redis_counter:
                records = walk(step_fn, journey, walkers, after_step)
        else:
            records = walk(step_fn, journey, walkers, after_step)
    counts.steps = len(records)
    counts.statements = tally.total
    counts.commits = tally.by_kind["COMMIT"]
    counts.by_kind = Counter({k: v for k, v in tally.by_kind.items() if k != "COMMIT"})
    counts.by_table = tally.by_table
    counts.pairs = tally.pairs
    counts.node_tenant_statements = tally.touching("journey_nodes", "tenants")
    if redis_counter is not None:
        counts.redis_roundtrips = redis_counter.total
        counts.redis_commands = redis_counter.commands
    if wire.available:
        counts.wire_roundtrips = wire.roundtrips
        counts.wire_queries = wire.queries
    else:
        counts.wire_note = wire.reason
    if cache is not None:
        after = cache_lookups(cache)
        counts.cache_hits, counts.cache_misses = after[0] - before[0], after[1] - before[1]
    return counts


def pg_stat_statements_status(engine: Engine) -> tuple[bool, str]:
    """(usable, why): pg_stat_statements counts only when preloaded by the server."""
    with engine.connect() as conn:
        preload = conn.execute(text("SHOW shared_preload_libraries")).scalar_one()
        available = conn.execute(
            text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
        ).scalar_one()
    if "pg_stat_statements" not in (preload or ""):
        where = "installed but" if available else "not installed and"
        return False, (
            f"pg_stat_statements is {where} not in shared_preload_libraries "
            f"({preload or 'empty'}); statements were cross-checked on the wire with libpq's "
            "trace instead"
        )
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    except Exception as exc:
        return False, f"pg_stat_statements is preloaded but unusable here: {exc}"
    return True, "pg_stat_statements is preloaded: statement counts cross-checked with it"


def pg_stat_statements_calls(engine: Engine, reset: bool = False) -> int:
    """Calls recorded for this database (reset: zero them for this database first)."""
    with engine.begin() as conn:
        dbid = conn.execute(
            text("SELECT oid FROM pg_database WHERE datname = current_database()")
        ).scalar_one()
        if reset:
            conn.execute(
                text("SELECT pg_stat_statements_reset(0, CAST(:d AS oid), 0)"), {"d": dbid}
            )
            return 0
        return int(
            conn.execute(
                text(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = :d "
                    "AND query NOT ILIKE '%pg_stat_statements%' "
                    "AND query NOT ILIKE '%pg_database%'"
                ),
                {"d": dbid},
            ).scalar_one()
        )
