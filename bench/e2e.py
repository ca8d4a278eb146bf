"""End to end through a real worker: publish every walker's first step at once, wait for every
step's commit sample (bench/probe.py), and time it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import probe
from bench.ceiling import CEILING_STEP, ceiling_kwargs
from bench.errors import BenchError
from bench.naive import (
    NAIVE_EXECUTE_NODE,
    naive_step_kwargs,
)
from bench.proc import PgBackendCpu, proc_cpu_seconds
from bench.seed import BenchJourney
from bench.stats import percentile
from bench.worker_process import WorkerProcess
from tasks import names
from tasks.engine import execute_node_kwargs

MODES = ("naive", "optimized", "ceiling")
STALL_SECONDS = 120.0
STEP_TASKS = {"naive": NAIVE_EXECUTE_NODE, "optimized": names.EXECUTE_NODE, "ceiling": CEILING_STEP}


def start_bench_worker(
    env: dict[str, str], log_path: Path, *, concurrency: int, loglevel: str
) -> WorkerProcess:
    """`celery -A bench.celery_app worker` on every lane (tasks/names.py WORKER_QUEUES)."""
    return WorkerProcess.start(
        "bench.celery_app",
        env,
        log_path,
        cwd=log_path.parent,
        concurrency=concurrency,
        loglevel=loglevel,
        hostname=f"bench-{uuid.uuid4().hex[:6]}@%h",
        queues=names.WORKER_QUEUES,
    )


class Stall:
    """A run whose worker stopped finishing tasks: a lost message ends a chain for good (on
    this shared machine, a broker database flushed by a run that is not ours), so say so
    instead of waiting for the whole timeout."""

    def __init__(self, seconds: float = STALL_SECONDS) -> None:
        self.seconds = seconds
        self.seen = -1
        self.since = time.monotonic()

    def check(self, done: int, progress: str) -> None:
        now = time.monotonic()
        if done != self.seen:
            self.seen, self.since = done, now
        elif now - self.since > self.seconds:
            raise BenchError(
                f"{progress}, and no task finished for {self.seconds:.0f}s: messages were lost "
                "(was the broker's database or vhost emptied by another run?)"
            )


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
    stall = Stall()
    while True:
        reader.poll()
        if reader.count(run, step_tasks) >= expected:
            break
        stall.check(reader.count(run), f"{mode}: {reader.count(run, step_tasks)} of {expected}")
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
