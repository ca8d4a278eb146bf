"""In-process steps: each mode's step function without the broker, walking contacts through
the whole journey one step at a time, timed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ceiling import ceiling_kwargs, successor
from bench.errors import BenchError
from bench.naive import (
    NAIVE_EXECUTE_NODE,
    NaiveStepRunner,
    StepCommand,
    StepOutcome,
)
from bench.seed import BenchJourney, Walker
from cache import get_cache
from db.engine import transaction
from db.step_store import step_store
from tasks import names
from tasks.engine import BatchCommand, StepEngine, StepRef
from tasks.lookups import JourneyReader
from tasks.settings import EngineSettings

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
