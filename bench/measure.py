"""Counting and timing: statements (SQLAlchemy events), wire round trips (libpq trace), Redis
commands (a wrapped client), in-process steps, and end-to-end runs through real workers."""

from __future__ import annotations

import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from sqlalchemy import Engine, func, select, text

from bench import probe
from bench.ceiling import CEILING_STEP, ceiling_kwargs, successor
from bench.naive import (
    NAIVE_EXECUTE_NODE,
    NaiveStepRunner,
    StepCommand,
    StepOutcome,
    naive_step_kwargs,
)
from bench.seed import BenchJourney, Walker
from cache import JourneyCache, get_cache
from db.engine import transaction
from db.instrumentation import StatementCounter, WireTrace
from db.models import Contact, JourneyContact, JourneyNodeExecution, Message
from db.step_store import step_store
from tasks import names
from tasks.engine import BatchCommand, StepEngine, StepRef, execute_node_kwargs
from tasks.lookups import JourneyReader
from tasks.settings import EngineSettings

MODES = ("naive", "optimized", "ceiling")
CLAIM_TTL = 900  # seconds, as the test rig's claims (tests/worker_process.py)
STEP_TASKS = {"naive": NAIVE_EXECUTE_NODE, "optimized": names.EXECUTE_NODE, "ceiling": CEILING_STEP}
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?([a-z_]+)\"?", re.IGNORECASE)
_WRITES = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?([a-z_]+)\"?", re.IGNORECASE)


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (a step failed, a run timed out)."""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- counters --------------------------------------------------------------------------------


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


# --- in-process steps ------------------------------------------------------------------------

StepFn = Callable[[StepCommand], StepOutcome]


def optimized_step(settings: EngineSettings) -> StepFn:
    """The execute_node task's body without the broker: the batch engine, one contact."""

    def step(cmd: StepCommand) -> StepOutcome:
        with step_store() as store:
            batch = BatchCommand(
                cmd.tenant_id, cmd.node_id, (StepRef(cmd.journey_contact_id, cmd.step),)
            )
            done = StepEngine(store, JourneyReader(get_cache()), settings).run(batch)
        contact = done.contacts[0]
        return StepOutcome(
            contact.outcome,
            contact.detail,
            str(done.journey_id) if done.journey_id else None,
            done.node_type,
            contact.execution_status,
            contact.contact_status,
            done.followups,
        )

    return step


def naive_step(settings: EngineSettings) -> StepFn:
    def step(cmd: StepCommand) -> StepOutcome:
        with transaction() as session:
            return NaiveStepRunner(session, settings).run(cmd)

    return step


@dataclass
class StepRecord:
    node_type: str
    seconds: float


def walk(
    step_fn: StepFn,
    journey: BenchJourney,
    walkers: Sequence[Walker],
    after_step: Callable[[str], None] | None = None,
) -> list[StepRecord]:
    """Every walker through the whole journey, one step at a time, breadth first (as a queue
    would interleave them). Each step is timed from before BEGIN to after COMMIT."""
    frontier = [
        StepCommand(journey.tenant_id, w.journey_contact_id, journey.entry, 0) for w in walkers
    ]
    follow = (names.EXECUTE_NODE, NAIVE_EXECUTE_NODE)
    records: list[StepRecord] = []
    clock = time.perf_counter
    while frontier:
        following: list[StepCommand] = []
        for cmd in frontier:
            started = clock()
            outcome = step_fn(cmd)
            elapsed = clock() - started
            if outcome.outcome != "executed":
                raise BenchError(f"step {cmd} did not execute: {outcome.outcome} {outcome.detail}")
            node_type = outcome.node_type or "?"
            records.append(StepRecord(node_type, elapsed))
            if after_step is not None:
                after_step(node_type)
            for f in outcome.followups:
                if f.task_name in follow:
                    following.append(
                        StepCommand(
                            uuid.UUID(f.kwargs["tenant_id"]),
                            uuid.UUID(f.kwargs["journey_contact_id"]),
                            uuid.UUID(f.kwargs["node_id"]),
                            f.kwargs["step"],
                        )
                    )
                elif f.task_name == names.EXECUTE_BATCH:
                    following += [
                        StepCommand(
                            uuid.UUID(f.kwargs["tenant_id"]),
                            uuid.UUID(jc),
                            uuid.UUID(f.kwargs["node_id"]),
                            step,
                        )
                        for jc, step in f.kwargs["journey_contacts"]
                    ]
        frontier = following
    return records


def ceiling_inprocess(journey: BenchJourney, walkers: int) -> list[StepRecord]:
    """The ceiling task's body without the broker: computing the successor's arguments."""
    records = []
    clock = time.perf_counter
    steps = len(journey.node_ids)
    for _ in range(walkers):
        kwargs: dict[str, Any] | None = ceiling_kwargs(
            journey.tenant_id, uuid.uuid4(), journey.entry, 0, steps
        )
        while kwargs is not None:
            started = clock()
            kwargs = successor(kwargs)
            records.append(StepRecord("noop", clock() - started))
    return records


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


def time_pass(
    step_fn: StepFn, journey: BenchJourney, walkers: Sequence[Walker], profile: Path | None = None
) -> list[float]:
    """Per-step wall times in seconds, nothing attached (optionally under cProfile)."""
    if profile is None:
        return [r.seconds for r in walk(step_fn, journey, walkers)]
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        records = walk(step_fn, journey, walkers)
    finally:
        profiler.disable()
        profiler.dump_stats(str(profile))
    return [r.seconds for r in records]


# --- effects ---------------------------------------------------------------------------------


def effects(engine: Engine, journey: BenchJourney, walkers: Sequence[Walker]) -> list[Any]:
    """What the walkers' steps left in the database, with ids replaced by positions, so two
    modes' runs over walkers with the same indexes compare equal when they had the same effects."""
    position = {n: i for i, n in enumerate(journey.node_ids)}
    jc_ids = [w.journey_contact_id for w in walkers]
    JNE = JourneyNodeExecution
    with engine.connect() as conn:
        jcs = {
            r.id: r
            for r in conn.execute(
                select(
                    JourneyContact.id,
                    JourneyContact.status,
                    JourneyContact.step_seq,
                    JourneyContact.current_node_id,
                    JourneyContact.status_reason,
                    JourneyContact.completed_at.is_not(None).label("completed"),
                    JourneyContact.due_at.is_(None).label("no_due"),
                ).where(JourneyContact.id.in_(jc_ids))
            )
        }
        executions: dict[Any, list[Any]] = {}
        for r in conn.execute(
            select(
                JNE.journey_contact_id,
                JNE.step_seq,
                JNE.node_id,
                JNE.status,
                JNE.result,
                JNE.error,
                JNE.executed_at.is_not(None),
                Message.body,
                Message.status,
                Message.direction,
            )
            .outerjoin(Message, Message.journey_node_execution_id == JNE.id)
            .where(JNE.journey_contact_id.in_(jc_ids))
            .order_by(JNE.step_seq)
        ):
            executions.setdefault(r[0], []).append(
                (r[1], position.get(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9])
            )
        attributes = {
            r.id: r.attributes
            for r in conn.execute(
                select(Contact.id, Contact.attributes).where(
                    Contact.id.in_([w.contact_id for w in walkers])
                )
            )
        }
    signature = []
    for w in walkers:
        jc = jcs[w.journey_contact_id]
        signature.append(
            (
                w.index,
                (
                    jc.status,
                    jc.step_seq,
                    position.get(jc.current_node_id),
                    jc.status_reason,
                    jc.completed,
                    jc.no_due,
                ),
                tuple(executions.get(w.journey_contact_id, ())),
                attributes[w.contact_id],
            )
        )
    return signature


def check_walked(engine: Engine, journey: BenchJourney, walkers: Sequence[Walker]) -> str | None:
    """None if every walker COMPLETED with one execution per node and its messages; else why."""
    ids = [w.journey_contact_id for w in walkers]
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(JourneyContact.status, func.count())
                .where(JourneyContact.id.in_(ids))
                .group_by(JourneyContact.status)
            ).all()
        )
        executions = conn.execute(
            select(func.count())
            .select_from(JourneyNodeExecution)
            .where(JourneyNodeExecution.journey_contact_id.in_(ids))
        ).scalar_one()
        messages = conn.execute(
            select(func.count())
            .select_from(Message)
            .join(
                JourneyNodeExecution, JourneyNodeExecution.id == Message.journey_node_execution_id
            )
            .where(JourneyNodeExecution.journey_contact_id.in_(ids))
        ).scalar_one()
    want_exec = len(walkers) * len(journey.node_ids)
    want_msg = len(walkers) * journey.sms_nodes
    if statuses != {"COMPLETED": len(walkers)} or executions != want_exec or messages != want_msg:
        return (
            f"expected {len(walkers)} COMPLETED, {want_exec} executions, {want_msg} messages; "
            f"found {statuses}, {executions} executions, {messages} messages"
        )
    return None


# --- PostgreSQL cross-check --------------------------------------------------------------------


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


# --- brokers and workers -----------------------------------------------------------------------


@contextmanager
def broker_namespace(kind: str, redis_url: str, rabbitmq_url: str) -> Iterator[str]:
    """A broker URL no one else uses: a claimed, flushed Redis database (claims share the test
    rig's registry keys, so tests and benches never flush each other's) or a fresh vhost."""
    if kind == "redis":
        registry = redis.Redis.from_url(redis_url)
        token = f"bench_{uuid.uuid4().hex[:12]}"
        db = next(
            (
                n
                for n in random.sample(range(1, 16), 15)
                if registry.set(f"jw:test-broker-db:{n}", token, nx=True, ex=CLAIM_TTL)
            ),
            None,
        )
        if db is None:
            raise BenchError("all 15 Redis broker databases are claimed by test runs")
        claim = f"jw:test-broker-db:{db}"
        stop = threading.Event()

        def keep_claim() -> None:
            # A large run outlives the claim's TTL: renew it while the bench holds the database.
            while not stop.wait(CLAIM_TTL / 5):
                with suppress(redis.RedisError):
                    if registry.get(claim) == token.encode():
                        registry.expire(claim, CLAIM_TTL)

        renewer = threading.Thread(target=keep_claim, name="bench-broker-claim", daemon=True)
        renewer.start()
        parts = urlsplit(redis_url)
        url = urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield url
        finally:
            stop.set()
            renewer.join(5)
            client.flushdb()
            client.close()
            if registry.get(claim) == token.encode():
                registry.delete(claim)
            registry.close()
        return
    if kind != "rabbitmq":
        raise ValueError(f"unknown broker {kind!r}")
    vhost = f"jw_bench_{uuid.uuid4().hex[:12]}"
    user = urlsplit(rabbitmq_url).username or "guest"
    try:
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"could not create a RabbitMQ vhost with rabbitmqctl: {exc}") from exc
    try:
        yield rabbitmq_url.rstrip("/") + "/" + vhost
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


def proc_cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of these processes (Linux /proc), None if unreadable."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return total / ticks


class PgBackendCpu:
    """CPU of this database's PostgreSQL backends, when the server runs on this machine and its
    /proc entries are readable (root, or the postgres user); otherwise every reading is None."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def backend_pids(self) -> list[int]:
        with self.engine.connect() as conn:
            host = conn.execute(text("SELECT inet_server_addr()")).scalar()
            pids = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            ).scalars()
            result = list(pids)
        local = host is None or str(host).split("/")[0] in ("127.0.0.1", "::1")
        return result if local else []

    def read(self, pids: Sequence[int] | None = None) -> tuple[list[int], float | None]:
        pids = list(pids) if pids is not None else self.backend_pids()
        return pids, (proc_cpu_seconds(pids) if pids else None)


class WorkerProcess:
    """`celery -A bench.celery_app worker`, prefork, as operators run the product's worker."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        concurrency: int,
        loglevel: str,
        queues: Sequence[str] = names.WORKER_QUEUES,
    ) -> None:
        self.log_path = log_path
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
            "--hostname",
            f"bench-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip",
            "--without-mingle",
            "--queues",
            ",".join(queues),
        ]
        self._handle = log_path.open("w")
        self.proc = subprocess.Popen(
            args, cwd=log_path.parent, env=env, stdout=self._handle, stderr=subprocess.STDOUT
        )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[int]:
        """The prefork children's pids (Linux /proc), empty if unreadable."""
        pids: list[int] = []
        try:
            for thread in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(p) for p in (thread / "children").read_text().split()]
        except (OSError, ValueError):
            return []
        return pids

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the worker and its children so far (Linux /proc), else None.

        Children that exited are not counted; prefork children live as long as the worker here
        (no --max-tasks-per-child)."""
        pids = [self.proc.pid]
        try:
            for thread in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(p) for p in (thread / "children").read_text().split()]
        except (OSError, ValueError):
            return None
        return proc_cpu_seconds(pids)

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown; SIGKILL (this worker and its own children only) if it hangs."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                children = subprocess.run(
                    ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
                ).stdout.split()
                for pid in [self.proc.pid, *map(int, children)]:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait(10)
        self._handle.close()


@dataclass
class E2EResult:
    mode: str
    executions: int
    seconds: float
    latencies: list[float]
    services: list[float]
    worker_cpu_per_step: float | None = None
    pg_cpu_per_step: float | None = None

    @property
    def per_s(self) -> float:
        return self.executions / self.seconds if self.seconds > 0 else float("nan")

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def service_ms(self, q: float) -> float:
        return percentile(self.services, q) * 1000


def first_steps(mode: str, journey: BenchJourney, jc_ids: Sequence[uuid.UUID]) -> list[dict]:
    steps = len(journey.node_ids)
    if mode == "optimized":
        return [execute_node_kwargs(journey.tenant_id, jc, journey.entry, 0) for jc in jc_ids]
    if mode == "naive":
        return [naive_step_kwargs(journey.tenant_id, jc, journey.entry, 0) for jc in jc_ids]
    return [ceiling_kwargs(journey.tenant_id, jc, journey.entry, 0, steps) for jc in jc_ids]


def e2e_run(
    app: Any,
    reader: probe.SampleReader,
    worker: WorkerProcess,
    mode: str,
    journey: BenchJourney,
    jc_ids: Sequence[uuid.UUID],
    timeout: float,
    pg_cpu: PgBackendCpu | None = None,
) -> E2EResult:
    """Publish every walker's first step at once, then wait for all N x M steps to commit.

    Throughput: steps / (last commit - first publish). Latency: each step's commit minus the
    moment its message was published (by the bench for step 0, by the previous step after its
    commit for the others)."""
    run = uuid.uuid4().hex
    expected = len(jc_ids) * len(journey.node_ids)
    task_name = STEP_TASKS[mode]
    messages = first_steps(mode, journey, jc_ids)
    cpu_before = worker.cpu_seconds()
    pg_pids, pg_before = pg_cpu.read() if pg_cpu is not None else ([], None)
    started = time.time()
    with probe.run_context(run), app.producer_or_acquire() as producer:
        for kwargs in messages:
            app.send_task(task_name, kwargs=kwargs, producer=producer)
    deadline = time.monotonic() + timeout
    step_tasks = (task_name, names.EXECUTE_BATCH)
    while True:
        reader.poll()
        if reader.count(run, step_tasks) >= expected:
            break
        if not worker.alive():
            raise BenchError(f"worker exited during the {mode} run:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(
                f"{mode}: {reader.count(run, step_tasks)} of {expected} steps within "
                f"{timeout:.0f}s; "
                f"worker log:\n{worker.log_tail()}"
            )
        time.sleep(0.05)
    cpu_after = worker.cpu_seconds()
    pg_after = proc_cpu_seconds(pg_pids) if pg_before is not None else None
    # Deliveries carry the run too: the steps are what this measures.
    samples = [s for s in reader.samples.pop(run) if s.task in step_tasks]
    end = max(s.committed_at for s in samples)
    cpu = None
    if cpu_before is not None and cpu_after is not None:
        cpu = (cpu_after - cpu_before) / len(samples)
    pg = None if pg_before is None or pg_after is None else (pg_after - pg_before) / len(samples)
    return E2EResult(
        mode,
        len(samples),
        end - started,
        [s.latency for s in samples],
        [s.service for s in samples],
        cpu,
        pg,
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
