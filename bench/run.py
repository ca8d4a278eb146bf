"""The whole benchmark in one run, so every ratio compares numbers taken minutes apart on the
same machine: in-process counts and times, end to end per broker, then growth."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from bench import probe, report
from bench.blast import EXECUTIONS_PER_CONTACT, run_blast, seed_blast, verify
from bench.counters import (
    Counts,
    cache_lookups,
    count_pass,
    pg_stat_statements_calls,
    pg_stat_statements_status,
)
from bench.e2e import MODES, E2EResult, e2e_run, start_bench_worker
from bench.effects import check_walked, effects
from bench.errors import BenchError
from bench.proc import PgBackendCpu, proc_cpu_seconds, rss_kb
from bench.report import blast_row
from bench.seed import (
    BenchJourney,
    create_database,
    drop_database,
    execution_rows,
    load_history,
    seed_journey,
    seed_walkers,
    server_url,
)
from bench.stats import median, percentile
from bench.walkers import StepFn, ceiling_inprocess, naive_step, optimized_step, time_pass, walk
from bench.worker_process import broker_namespace
from cache import CacheSettings, JourneyCache, build_cache, use_cache
from db import engine as db_engine
from db.migrate import upgrade
from db.settings import DbSettings
from tasks import names
from tasks.settings import EngineSettings, engine_settings
from worker.app import create_app
from worker.settings import WorkerSettings

Echo = Callable[[str], None]
DB_MODES = ("naive", "optimized")
ALL_MODES = (*MODES, "blast")
# Celery's broker_url prefers these variables over the URL the app was given: the bench's own
# publisher must never follow them to the user's broker while its worker listens on the bench's.
BROKER_ENV = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")


@dataclass(frozen=True)
class Options:
    contacts: int = 100
    nodes: int = 10
    brokers: tuple[str, ...] = ("redis", "rabbitmq")
    inproc_contacts: int = 40
    growth_rows: int = 1_000_000
    growth_base_rows: int = 10_000
    growth_contacts: int = 20
    rounds: int = 1
    warmup_contacts: int = 20
    concurrency: int = 2
    timeout: float = 600.0
    database_url: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    worker_loglevel: str = "INFO"
    keep: bool = False
    profile: Path | None = None
    worker_profile: Path | None = None
    logs: Path | None = None
    modes: tuple[str, ...] = ALL_MODES
    blast_contacts: int = 20_000
    blast_ceiling_contacts: int = 1000
    blast_warmup_contacts: int = 400
    # Task events (WORKER_SEND_TASK_EVENTS) for the blast and its ceiling: each value is a run.
    task_events: tuple[bool, ...] = (False,)

    @property
    def classic(self) -> bool:
        """Whether any of naive, optimized, ceiling (and so the in-process phases) runs."""
        return any(m in MODES for m in self.modes)


@dataclass
class Outcome:
    rows: list[dict[str, Any]]
    goals: list[tuple[str, bool | None, str]]
    text: str


@dataclass
class Context:
    options: Options
    engine: Engine
    cache: JourneyCache
    settings: EngineSettings
    journey: BenchJourney
    db_url: Any
    cache_prefix: str
    echo: Echo
    notes: list[str] = field(default_factory=list)
    load_start: float = field(default_factory=lambda: os.getloadavg()[0])
    pg_cpu: PgBackendCpu | None = None
    inproc_pg_cpu: dict[str, float | None] = field(default_factory=dict)


def _phase(echo: Echo, title: str) -> Callable[[], None]:
    started = time.perf_counter()
    echo(f"-- {title}")

    def done() -> None:
        echo(f"   ({time.perf_counter() - started:.1f}s)")

    return done


def _step_fns(settings: EngineSettings) -> dict[str, StepFn]:
    return {"naive": naive_step(settings), "optimized": optimized_step(settings)}


def _interleaved_times(
    ctx: Context, walkers: dict[str, list[Any]], chunks: int = 4
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Time both DB modes in alternating chunks, so a noisy minute hurts both alike.

    Returns per-step wall times and this process's CPU seconds per step (the client side
    only: PostgreSQL's and Redis's own CPU is not in it), which a busy machine disturbs less."""
    fns = _step_fns(ctx.settings)
    times: dict[str, list[float]] = {m: [] for m in walkers}
    cpu: dict[str, float] = dict.fromkeys(walkers, 0.0)
    pg: dict[str, float | None] = dict.fromkeys(walkers, 0.0)
    pids = ctx.pg_cpu.backend_pids() if ctx.pg_cpu is not None else []
    for c in range(chunks):
        order = list(walkers) if c % 2 == 0 else list(reversed(list(walkers)))
        for mode in order:
            part = walkers[mode][c::chunks]
            if part:
                pg_before = proc_cpu_seconds(pids) if pids else None
                started = time.process_time()
                times[mode] += time_pass(fns[mode], ctx.journey, part)
                cpu[mode] += time.process_time() - started
                pg_after = proc_cpu_seconds(pids) if pids else None
                if pg[mode] is None or pg_before is None or pg_after is None:
                    pg[mode] = None
                else:
                    pg[mode] += pg_after - pg_before
    ctx.inproc_pg_cpu = {
        m: (v / len(times[m]) if v is not None and times[m] else None) for m, v in pg.items()
    }
    return times, {m: cpu[m] / len(times[m]) if times[m] else 0.0 for m in walkers}


# --- phases ------------------------------------------------------------------------------------


@dataclass
class Inproc:
    counts: dict[str, Counts]
    times: dict[str, list[float]]
    cpu: dict[str, float]
    pg_cpu: dict[str, float | None]
    effects_equal: bool
    pgss: dict[str, int]


def measure_inprocess(ctx: Context, pgss_usable: bool) -> Inproc:
    o, fns = ctx.options, _step_fns(ctx.settings)
    # Warm-up: fill the cache, load code, and run every statement variant past psycopg's
    # prepare threshold (5 executions), so the counted pass sees the steady state.
    for mode in DB_MODES:
        walk(fns[mode], ctx.journey, seed_walkers(ctx.engine, ctx.journey, 6, ctx.settings))
    counted = max(3, o.inproc_contacts // 4)
    counts: dict[str, Counts] = {}
    pgss: dict[str, int] = {}
    for mode in DB_MODES:
        walkers = seed_walkers(ctx.engine, ctx.journey, counted, ctx.settings)
        if pgss_usable:
            try:
                pg_stat_statements_calls(ctx.engine, reset=True)
            except Exception as exc:  # a cross-check only: never fail the run for it
                pgss_usable = False
                ctx.notes.append(f"pg_stat_statements could not be read: {exc}")
        cache = ctx.cache if mode == "optimized" else None
        counts[mode] = count_pass(ctx.engine, fns[mode], ctx.journey, walkers, cache)
        if pgss_usable:
            # Its calls include BEGIN and COMMIT (track_utility): compare with the wire count.
            pgss[mode] = pg_stat_statements_calls(ctx.engine)
    walkers = {
        m: seed_walkers(ctx.engine, ctx.journey, o.inproc_contacts, ctx.settings) for m in DB_MODES
    }
    times, cpu = _interleaved_times(ctx, walkers)
    pg_cpu = dict(ctx.inproc_pg_cpu)
    same = effects(ctx.engine, ctx.journey, walkers["naive"]) == effects(
        ctx.engine, ctx.journey, walkers["optimized"]
    )
    started = time.process_time()
    times["ceiling"] = [r.seconds for r in ceiling_inprocess(ctx.journey, o.inproc_contacts)]
    cpu["ceiling"] = (time.process_time() - started) / max(len(times["ceiling"]), 1)
    if o.profile is not None:
        extra = seed_walkers(ctx.engine, ctx.journey, o.inproc_contacts, ctx.settings)
        time_pass(fns["optimized"], ctx.journey, extra, profile=o.profile)
        ctx.notes.append(f"cProfile of the optimized in-process pass: {o.profile}")
    return Inproc(counts, times, cpu, pg_cpu, same, pgss)


@dataclass
class BrokerRuns:
    runs: dict[str, list[E2EResult]]
    cache_hits: int = 0
    cache_misses: int = 0

    @property
    def cache_hit_ratio(self) -> float | None:
        lookups = self.cache_hits + self.cache_misses
        return self.cache_hits / lookups if lookups else None


@contextmanager
def without_broker_env() -> Iterator[None]:
    """The bench process without CELERY_BROKER_URL and friends while it runs (restored after)."""
    saved = {k: os.environ.pop(k) for k in BROKER_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def publisher_app(url: str, task_events: bool = False) -> Celery:
    """The product's app, publishing to exactly `url`: the read and write URLs are set
    explicitly, which Celery prefers over CELERY_BROKER_URL (it prefers the variable over the
    URL given to Celery(...) itself)."""
    settings = WorkerSettings(broker_url=url).model_copy(update={"task_events": task_events})
    app = create_app(settings)
    from bench.celery_app import configure

    configure(app)
    app.conf.broker_url = app.conf.broker_read_url = app.conf.broker_write_url = url
    return app


def worker_env(
    ctx: Context, broker_url: str, samples: Path, task_events: bool = False
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "CELERY_", "REDIS_", "CACHE_", "BENCH_"))
    }
    env.update(
        DATABASE_URL=ctx.db_url.render_as_string(hide_password=False),
        CELERY_BROKER_URL=broker_url,
        REDIS_URL=ctx.options.redis_url,
        CACHE_KEY_PREFIX=ctx.cache_prefix,
        PYTHONUNBUFFERED="1",
        WORKER_SEND_TASK_EVENTS="1" if task_events else "0",
        SMS_PROVIDER="log",
    )
    env[probe.SAMPLES_ENV] = str(samples)
    if ctx.options.worker_profile is not None:
        env[probe.PROFILE_ENV] = str(ctx.options.worker_profile.resolve())
    return env


def measure_broker(ctx: Context, kind: str) -> BrokerRuns:
    o = ctx.options
    if o.worker_profile is not None:
        o.worker_profile.mkdir(parents=True, exist_ok=True)
        note = (
            f"worker children ran under cProfile (all modes alike): {o.worker_profile}/"
            "<task>-<pid>.pstats"
        )
        if note not in ctx.notes:
            ctx.notes.append(note)
    probe.install()
    result = BrokerRuns({m: [] for m in MODES})
    with (
        broker_namespace(kind, o.redis_url, o.rabbitmq_url) as url,
        tempfile.TemporaryDirectory(prefix=f"jw-bench-{kind}-") as scratch,
    ):
        # --logs keeps the worker's log and the raw samples; otherwise they go with the run.
        tmp = Path(scratch) if o.logs is None else o.logs / kind
        samples = tmp / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        worker = start_bench_worker(
            worker_env(ctx, url, samples),
            tmp / "worker.log",
            concurrency=o.concurrency,
            loglevel=o.worker_loglevel,
        )
        app = publisher_app(url)
        reader = probe.SampleReader(samples)

        def once(mode: str, contacts: int, timeout: float) -> E2EResult:
            walkers = []
            if mode == "ceiling":
                jc_ids = [uuid.uuid4() for _ in range(contacts)]
            else:
                walkers = seed_walkers(ctx.engine, ctx.journey, contacts, ctx.settings)
                jc_ids = [w.journey_contact_id for w in walkers]
            run = e2e_run(app, reader, worker, mode, ctx.journey, jc_ids, timeout, ctx.pg_cpu)
            if walkers:
                problem = check_walked(ctx.engine, ctx.journey, walkers)
                if problem:
                    raise BenchError(f"{mode} on {kind}: {problem}")
            return run

        try:
            # The ceiling first: it needs no database, so it doubles as the readiness check.
            warm = max(1, min(o.contacts, o.warmup_contacts))
            for mode in MODES[::-1]:
                once(mode, warm, max(o.timeout, 120.0))
            for r in range(o.rounds):
                order = MODES[r % 3 :] + MODES[: r % 3]
                for mode in order:
                    before = cache_lookups(ctx.cache) if mode == "optimized" else (0, 0)
                    result.runs[mode].append(once(mode, o.contacts, o.timeout))
                    if mode == "optimized":
                        after = cache_lookups(ctx.cache)
                        result.cache_hits += after[0] - before[0]
                        result.cache_misses += after[1] - before[1]
                    ctx.echo(report.e2e_line(kind, mode, r + 1, result.runs[mode][-1]))
        finally:
            worker.stop()
            app.close()
    return result


def measure_blast(ctx: Context, kind: str, task_events: bool) -> dict[str, Any]:
    """One worker on `kind` with task events on or off: the chained no-op ceiling, a warm-up
    blast, then the blast of --blast-contacts, verified exactly once. Returns its row."""
    o = ctx.options
    events = "on" if task_events else "off"
    label = f"blast {kind} events {events}"
    probe.install()
    with (
        broker_namespace(kind, o.redis_url, o.rabbitmq_url) as url,
        tempfile.TemporaryDirectory(prefix=f"jw-blast-{kind}-") as scratch,
    ):
        tmp = Path(scratch) if o.logs is None else o.logs / f"blast-{kind}-events-{events}"
        samples = tmp / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        worker = start_bench_worker(
            worker_env(ctx, url, samples, task_events),
            tmp / "worker.log",
            concurrency=o.concurrency,
            loglevel=o.worker_loglevel,
        )
        app = publisher_app(url, task_events)
        reader = probe.SampleReader(samples)
        enroll_size = ctx.settings.enroll_max_contacts
        try:
            ceiling_journey = BenchJourney(
                ctx.journey.tenant_id,
                ctx.journey.journey_id,
                tuple(uuid.uuid4() for _ in range(EXECUTIONS_PER_CONTACT)),
                ("noop",) * EXECUTIONS_PER_CONTACT,
            )
            # The ceiling's warm-up doubles as the readiness check (it needs no database).
            warm = [uuid.uuid4() for _ in range(max(1, min(20, o.blast_ceiling_contacts)))]
            e2e_run(app, reader, worker, "ceiling", ceiling_journey, warm, max(o.timeout, 120))

            def ceiling_run(when: str) -> E2EResult:
                jc_ids = [uuid.uuid4() for _ in range(o.blast_ceiling_contacts)]
                run = e2e_run(app, reader, worker, "ceiling", ceiling_journey, jc_ids, o.timeout)
                ctx.echo(
                    f"   {label}: ceiling {when}: {run.executions} no-op tasks in "
                    f"{run.seconds:.2f}s = {run.per_s:.0f}/s"
                )
                return run

            ceiling_before = ceiling_run("before")
            if o.blast_warmup_contacts:
                warm_journey = seed_blast(ctx.engine, ctx.db_url, o.blast_warmup_contacts)
                run_blast(
                    app, reader, worker, ctx.engine, warm_journey,
                    enroll_size=enroll_size, timeout=o.timeout, echo=ctx.echo,
                    label=f"{label} warm-up",
                )  # fmt: skip
            journey = seed_blast(ctx.engine, ctx.db_url, o.blast_contacts)
            rss_start = rss_kb(worker.children())
            cpu_before = worker.cpu_seconds()
            load_start = os.getloadavg()[0]
            result = run_blast(
                app, reader, worker, ctx.engine, journey,
                enroll_size=enroll_size, timeout=o.timeout, echo=ctx.echo, label=label,
            )  # fmt: skip
            cpu_after = worker.cpu_seconds()
            result.rss_start_kb, result.rss_end_kb = rss_start, rss_kb(worker.children())
            load_end = os.getloadavg()[0]
            result.checks = verify(ctx.engine, journey)
            # The machine's load moves in minutes: the ceiling around the blast, averaged.
            ceiling_after = ceiling_run("after")
        finally:
            worker.stop()
            app.close()
    ceiling_per_s = (ceiling_before.per_s + ceiling_after.per_s) / 2
    row = blast_row(kind, task_events, result, ceiling_per_s)
    row.update(
        load_avg_1m_start=round(load_start, 2),
        load_avg_1m_end=round(load_end, 2),
        worker_cpu_ms_per_execution=(
            (cpu_after - cpu_before) * 1000 / result.executions
            if cpu_before is not None and cpu_after is not None and result.executions
            else None
        ),
        blast_wall_ms_per_execution=result.seconds * 1000 / result.executions,
        ceiling_tasks=ceiling_before.executions,
        ceiling_before_per_s=ceiling_before.per_s,
        ceiling_after_per_s=ceiling_after.per_s,
    )
    ctx.echo(report.blast_line(label, row))
    if result.checks:
        raise BenchError(f"{label}: not exactly once: " + "; ".join(result.checks))
    return row


@dataclass
class Growth:
    rows_small: int
    rows_large: int
    p50_small: dict[str, float]
    p50_large: dict[str, float]
    load_seconds: float

    def ratio(self, mode: str) -> float:
        return self.p50_large[mode] / self.p50_small[mode]


def measure_growth(ctx: Context) -> Growth:
    """Per-node in-process p50 with a small and a large execution log, both modes interleaved.

    The end-to-end runs are over, so the log is emptied first (TRUNCATE executions and their
    messages) and then COPY-loaded to exactly the two sizes asked for, whatever the e2e size."""
    o = ctx.options
    with ctx.engine.begin() as conn:
        conn.execute(text("TRUNCATE journey_node_executions, messages CASCADE"))
    base = o.growth_base_rows
    if base * 10 > o.growth_rows:
        base = max(1, o.growth_rows // 10)
        ctx.notes.append(
            f"growth: small table set to {base} rows (a tenth of --growth-rows {o.growth_rows})"
        )
    p50: dict[int, dict[str, float]] = {}
    rows_at: list[int] = []
    loaded = 0.0
    fns = _step_fns(ctx.settings)
    for target in (base, o.growth_rows):
        current = execution_rows(ctx.engine)
        if target > current:
            ctx.echo(f"   COPY {target - current:,} execution rows (to {target:,})")
            loaded += load_history(ctx.db_url, ctx.journey, target - current)
        rows = execution_rows(ctx.engine)
        rows_at.append(rows)
        for mode in DB_MODES:  # re-plan after ANALYZE, outside the timing
            walk(fns[mode], ctx.journey, seed_walkers(ctx.engine, ctx.journey, 1, ctx.settings))
        walkers = {
            m: seed_walkers(ctx.engine, ctx.journey, o.growth_contacts, ctx.settings)
            for m in DB_MODES
        }
        times, _cpu = _interleaved_times(ctx, walkers)
        p50[rows] = {m: percentile(t, 50) for m, t in times.items()}
        ctx.echo(
            f"   {rows:>10,} rows: p50 "
            + ", ".join(f"{m} {v * 1000:.3f} ms" for m, v in p50[rows].items())
        )
    small, large = rows_at
    return Growth(small, large, p50[small], p50[large], loaded)


# --- rows and text -----------------------------------------------------------------------------


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def build_rows(
    ctx: Context, inproc: Inproc, brokers: dict[str, BrokerRuns], growth: Growth
) -> list[dict[str, Any]]:
    o = ctx.options
    rows = []
    for broker, runs in brokers.items():
        ceiling_rate = median([r.per_s for r in runs.runs["ceiling"]])
        for mode in MODES:
            counts = inproc.counts.get(mode)
            times = inproc.times[mode]
            e2e = runs.runs[mode]
            rate = median([r.per_s for r in e2e])
            row: dict[str, Any] = {
                "mode": mode,
                "broker": broker,
                "statements_per_node": counts.statements_per_node if counts else 0.0,
                "db_roundtrips_per_node": 0.0,
                "redis_roundtrips_per_node": 0.0,
                "inproc_p50_ms": percentile(times, 50) * 1000,
                "inproc_p99_ms": percentile(times, 99) * 1000,
                "e2e_per_s": rate,
                "e2e_p99_ms": median([r.latency_ms(99) for r in e2e]),
                "ceiling_per_s": ceiling_rate,
                "ratio_vs_ceiling": rate / ceiling_rate,
                "cache_hit_ratio": runs.cache_hit_ratio if mode == "optimized" else None,
                "growth_ratio": growth.ratio(mode) if mode in DB_MODES else None,
                # Beyond the required keys.
                "inproc_p95_ms": percentile(times, 95) * 1000,
                "inproc_cpu_ms_per_node": inproc.cpu[mode] * 1000,
                "inproc_pg_cpu_ms_per_node": _ms(inproc.pg_cpu.get(mode, 0.0)),
                "e2e_p50_ms": median([r.latency_ms(50) for r in e2e]),
                "e2e_task_p50_ms": median([r.service_ms(50) for r in e2e]),
                "e2e_task_p99_ms": median([r.service_ms(99) for r in e2e]),
                "e2e_worker_cpu_ms_per_node": median(
                    [r.worker_cpu_per_step * 1000 for r in e2e if r.worker_cpu_per_step is not None]
                ),
                "e2e_pg_cpu_ms_per_node": median(
                    [r.pg_cpu_per_step * 1000 for r in e2e if r.pg_cpu_per_step is not None]
                ),
                "e2e_executions": sum(r.executions for r in e2e),
                "e2e_rounds": len(e2e),
                "contacts": o.contacts,
                "nodes": o.nodes,
                "inproc_steps": len(times),
                "cpus": os.cpu_count(),
                "load_avg_1m_start": round(ctx.load_start, 2),
                "load_avg_1m_end": round(os.getloadavg()[0], 2),
            }
            if counts is not None:
                wire = counts.wire_roundtrips_per_node
                row["db_roundtrips_formula_per_node"] = counts.formula_roundtrips_per_node
                row["db_roundtrips_per_node"] = (
                    wire if wire is not None else counts.formula_roundtrips_per_node
                )
                row["db_roundtrips_source"] = "wire" if wire is not None else "formula"
                row["redis_roundtrips_per_node"] = counts.per_node(counts.redis_roundtrips)
                row["counted_steps"] = counts.steps
                row["statements_by_kind_per_node"] = report.per_node(counts.by_kind, counts.steps)
                row["statements_by_table_per_node"] = report.per_node(counts.by_table, counts.steps)
                row["statements_by_kind_table_per_node"] = report.per_node(
                    counts.pairs, counts.steps
                )
                row["statements_by_node_type"] = {
                    t: round(sum(v) / len(v), 3) for t, v in sorted(counts.by_node_type.items())
                }
                row["wire_simple_queries_per_node"] = report.per_node(
                    counts.wire_queries, counts.steps
                )
                row["redis_commands_per_node"] = report.per_node(
                    counts.redis_commands, counts.steps
                )
                row["node_tenant_statements"] = counts.node_tenant_statements
                row["inproc_cache_hit_ratio"] = counts.cache_hit_ratio
                if mode in inproc.pgss:
                    row["pg_stat_statements_per_node"] = inproc.pgss[mode] / counts.steps
            if mode in DB_MODES:
                row["growth_rows_small"] = growth.rows_small
                row["growth_rows_large"] = growth.rows_large
                row["growth_p50_small_ms"] = growth.p50_small[mode] * 1000
                row["growth_p50_large_ms"] = growth.p50_large[mode] * 1000
            rows.append(row)
    return rows


# --- the run -----------------------------------------------------------------------------------


def run(options: Options, echo: Echo = print) -> Outcome:
    if not options.brokers:
        raise ValueError("name at least one broker (redis, rabbitmq)")
    server = server_url(options.database_url)
    cache_prefix = f"jwbench_{uuid.uuid4().hex[:12]}"
    # Validate the settings before creating anything that would need cleaning up.
    env = {**os.environ, "DATABASE_URL": server.render_as_string(hide_password=False)}
    base_db = DbSettings.from_env(env)
    cache_settings = CacheSettings(url=options.redis_url, key_prefix=cache_prefix)
    with ExitStack() as cleanup:
        db_url = create_database(server)

        def drop() -> None:
            if options.keep:
                echo(f"kept database {db_url.database}")
            else:
                drop_database(server, str(db_url.database))

        cleanup.callback(drop)
        echo(
            f"journey-worker bench: {options.contacts} contacts x {options.nodes} nodes, brokers "
            f"{', '.join(options.brokers)}, prefork -c {options.concurrency}; database "
            f"{db_url.database} on {server.host}:{server.port or 5432}; cache prefix "
            f"{cache_prefix}"
        )
        engine = db_engine.build_engine(
            base_db.model_copy(update={"url": db_url, "pool_size": 1, "max_overflow": 0})
        )
        cleanup.callback(engine.dispose)
        monitor = create_engine(db_url, poolclass=NullPool)
        cleanup.callback(monitor.dispose)
        cache = build_cache(cache_settings)
        cleanup.callback(_drop_cache_keys, cache, cache_prefix)
        db_engine.use_engine(engine)
        cleanup.callback(db_engine.use_engine, None)
        use_cache(cache)
        cleanup.callback(use_cache, None)
        cleanup.enter_context(without_broker_env())
        return _measure(options, engine, cache, db_url, cache_prefix, echo, monitor)
    raise AssertionError("unreachable")


def _drop_cache_keys(cache: JourneyCache, prefix: str) -> None:
    try:
        for key in cache.redis.scan_iter(match=f"{prefix}:*", count=500):
            cache.redis.delete(key)
    finally:
        cache.redis.close()


def _measure(
    options: Options,
    engine: Engine,
    cache: JourneyCache,
    db_url: Any,
    cache_prefix: str,
    echo: Echo,
    monitor: Engine,
) -> Outcome:
    done = _phase(echo, "migrate and seed")
    upgrade(engine, "head")
    settings = engine_settings()
    journey = seed_journey(engine, options.nodes)
    ctx = Context(options, engine, cache, settings, journey, db_url, cache_prefix, echo)
    ctx.pg_cpu = PgBackendCpu(monitor)
    pgss_usable, pgss_note = pg_stat_statements_status(engine)
    ctx.notes.append(pgss_note)
    done()

    rows: list[dict[str, Any]] = []
    results: list[tuple[str, bool | None, str]] = []
    sections: list[str] = [""]
    if options.classic:
        classic_rows, classic_goals, classic_text = _measure_classic(ctx, pgss_usable)
        rows += classic_rows
        results += classic_goals
        sections += classic_text
    if "blast" in options.modes:
        blast_rows = []
        for kind in options.brokers:
            for events in options.task_events:
                done = _phase(
                    echo,
                    f"blast through {kind}, task events {'on' if events else 'off'}: "
                    f"{options.blast_contacts:,} contacts enrolled with journeys.enroll",
                )
                blast_rows.append(measure_blast(ctx, kind, events))
                done()
        rows += blast_rows
        results += report.blast_goals(blast_rows)
        sections += ["blast (node executions end to end, counted in the worker):"]
        sections += [report.blast_table(blast_rows), ""]
        ctx.notes.append(
            "blast: the worker consumes " + ", ".join(names.WORKER_QUEUES) + " (no beat, so no "
            "dispatcher); deliveries run (SMS_PROVIDER=log); round trips per node execution are "
            "statements + COMMITs counted in the children (the step store runs in autocommit)"
        )
    ctx.notes.append(
        f"machine: {os.cpu_count()} CPUs, 1-minute load average {ctx.load_start:.2f} at the start "
        f"and {os.getloadavg()[0]:.2f} at the end (anything near the CPU count means noisy times)"
    )
    return Outcome(rows, results, report.summary(sections, ctx.notes, results))


def _measure_classic(
    ctx: Context, pgss_usable: bool
) -> tuple[list[dict[str, Any]], list[tuple[str, bool | None, str]], list[str]]:
    """naive, optimized and ceiling: in process, end to end per broker, then growth."""
    echo, options = ctx.echo, ctx.options
    done = _phase(echo, "in-process: counts and times (no broker)")
    inproc = measure_inprocess(ctx, pgss_usable)
    if not inproc.effects_equal:
        raise BenchError("naive and optimized left different rows for the same walkers")
    ctx.notes.append(
        "effects: naive and optimized left identical executions, messages, attributes and "
        "journey-contact states for the same walkers"
    )
    done()

    brokers: dict[str, BrokerRuns] = {}
    for kind in options.brokers:
        done = _phase(echo, f"end to end through {kind}: celery -A bench.celery_app worker")
        brokers[kind] = measure_broker(ctx, kind)
        done()

    done = _phase(echo, "growth: in-process time with a small and a large execution table")
    growth = measure_growth(ctx)
    done()

    rows = build_rows(ctx, inproc, brokers, growth)
    node_tenant = inproc.counts["optimized"].node_tenant_statements
    results = report.goals(rows, node_tenant)
    ctx.notes.append(
        "deliveries run in the same worker (SMS_PROVIDER=log); the e2e rates count node steps only"
    )
    text = [
        report.table(rows),
        "",
        "per node execution (in-process, warm cache):",
        report.breakdown(inproc.counts, inproc.cpu, inproc.pg_cpu, inproc.pgss),
        "",
    ]
    return rows, results, text


def run_and_write(
    options: Options, json_path: Path | None, chart_path: Path | None, echo: Echo = print
) -> Outcome:
    outcome = run(options, echo)
    echo(outcome.text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        report.write_json(outcome.rows, json_path)
        echo(f"wrote {json_path}")
    if chart_path is not None and not options.classic:
        echo("no chart: it shows naive, optimized and ceiling, and none of them ran")
    elif chart_path is not None:
        title = (
            f"journey-worker bench: {options.contacts} contacts x {options.nodes} nodes, "
            f"prefork -c {options.concurrency}, {os.cpu_count()} CPUs"
        )
        chart_path.parent.mkdir(parents=True, exist_ok=True)
        report.chart(outcome.rows, chart_path, title)
        echo(f"wrote {chart_path}")
    return outcome


def parse_brokers(raw: str) -> tuple[str, ...]:
    names = tuple(b.strip().lower() for b in raw.split(",") if b.strip())
    unknown = [b for b in names if b not in ("redis", "rabbitmq")]
    if unknown:
        raise ValueError(f"unknown broker(s) {', '.join(unknown)}: use redis and/or rabbitmq")
    return tuple(dict.fromkeys(names))


def parse_modes(raw: str) -> tuple[str, ...]:
    names_ = tuple(m.strip().lower() for m in raw.split(",") if m.strip())
    unknown = [m for m in names_ if m not in ALL_MODES]
    if unknown or not names_:
        raise ValueError(
            f"unknown mode(s) {', '.join(unknown) or '(none)'}: use {', '.join(ALL_MODES)}"
        )
    return tuple(dict.fromkeys(names_))


__all__: Sequence[str] = (
    "Options",
    "Outcome",
    "parse_brokers",
    "parse_modes",
    "run",
    "run_and_write",
)
