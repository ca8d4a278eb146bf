"""`journey-worker demo`: a real worker walks seeded contacts through a journey, then a summary.

With nothing configured it runs on the embedded default (SQLite, an in-process broker, an
in-process cache); with DATABASE_URL, REDIS_URL and CELERY_BROKER_URL it runs on those.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click
from sqlalchemy import Engine, func, insert, select
from tqdm import tqdm

from cache import get_cache
from db import engine as db_engine
from db.instrumentation import StatementCounter, statement_scope
from db.migrate import upgrade
from db.models import (
    Contact,
    Journey,
    JourneyContact,
    JourneyNode,
    JourneyNodeExecution,
    Message,
    Tenant,
)
from db.settings import EMBEDDED_DIR, parse_database_url, use_db_settings
from tasks import names
from worker.app import create_app
from worker.health import redacted
from worker.settings import WorkerSettings, current_settings

FINISHED = ("COMPLETED", "EXITED", "FAILED")


@dataclass(frozen=True)
class DemoJourney:
    tenant_id: uuid.UUID
    journey_id: uuid.UUID
    contact_ids: list[uuid.UUID]


def seed(engine: Engine, contacts: int, wait_seconds: float) -> DemoJourney:
    """A tenant and a journey: send, wait, branch on plan, then send or exit."""
    tenant_id, journey_id = uuid.uuid4(), uuid.uuid4()
    hello, pause, check, thanks, bye = (uuid.uuid4() for _ in range(5))
    nodes = [
        (hello, "send_sms", {"body": "Hi {{first_name}}, welcome aboard!"}, pause),
        (pause, "wait", {"seconds": wait_seconds}, check),
        (
            check,
            "condition",
            {
                "field": "plan",
                "op": "eq",
                "value": "pro",
                "true_node_id": str(thanks),
                "false_node_id": str(bye),
            },
            None,
        ),
        (thanks, "send_sms", {"body": "Thanks for going pro, {{first_name}}!"}, None),
        (bye, "exit", {}, None),
    ]
    contact_ids = [uuid.uuid4() for _ in range(contacts)]
    with engine.begin() as conn:
        conn.execute(insert(Tenant).values(id=tenant_id, name="Demo tenant", settings={}))
        conn.execute(
            insert(Journey).values(
                id=journey_id,
                tenant_id=tenant_id,
                name="Welcome",
                status="ACTIVE",
                entry_node_id=hello,
            )
        )
        conn.execute(
            insert(JourneyNode),
            [
                {
                    "id": nid,
                    "tenant_id": tenant_id,
                    "journey_id": journey_id,
                    "type": kind,
                    "config": config,
                    "next_node_id": nxt,
                }
                for nid, kind, config, nxt in reversed(nodes)
            ],
        )
        conn.execute(
            insert(Contact),
            [
                {
                    "id": cid,
                    "tenant_id": tenant_id,
                    "phone": f"+1555{i:07d}",
                    "email": f"contact{i}@example.test",
                    "attributes": {
                        "first_name": f"Contact{i}",
                        "plan": "pro" if i % 2 else "basic",
                    },
                }
                for i, cid in enumerate(contact_ids)
            ],
        )
    return DemoJourney(tenant_id, journey_id, contact_ids)


def progress(engine: Engine, demo: DemoJourney) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(JourneyContact.status, func.count())
            .where(JourneyContact.journey_id == demo.journey_id)
            .group_by(JourneyContact.status)
        ).all()
    return {status: count for status, count in rows}


# Tasks run, by name: statements per batch need the number of batches.
_task_runs: Counter[str] = Counter()
_STEP_TASKS = (names.EXECUTE_NODE, names.EXECUTE_BATCH)


def _scope_statements_by_task(sender: Any = None, **_: Any) -> None:
    name = sender.name if sender is not None else "other"
    _task_runs[name] += 1
    statement_scope.set(name)


def _end_scope(**_: Any) -> None:
    statement_scope.set("other")


@contextmanager
def in_process_worker(app: Any, sqlite: bool) -> Iterator[None]:
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun, task_prerun

    # Attribute every statement to the task that ran it, for the per-node figures.
    task_prerun.connect(_scope_statements_by_task, weak=False)
    task_postrun.connect(_end_scope, weak=False)

    # SQLite takes one writer at a time: one worker thread. Elsewhere, a few threads.
    pool, concurrency = ("solo", 1) if sqlite else ("threads", 4)
    with start_worker(
        app,
        pool=pool,
        concurrency=concurrency,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        yield


@click.command()
@click.option("--contacts", default=200, show_default=True, help="Contacts to enroll.")
@click.option("--wait-seconds", default=2.0, show_default=True, help="The journey's wait.")
@click.option("--timeout", default=300.0, show_default=True, help="Give up after this long.")
def demo(contacts: int, wait_seconds: float, timeout: float) -> None:
    """Seed a journey, enroll contacts, run a real worker, and print a summary."""
    configured = current_settings()
    settings = configured.db
    if "url" not in settings.model_fields_set:  # DATABASE_URL unset: a fresh database of its own
        EMBEDDED_DIR.mkdir(exist_ok=True)
        path = EMBEDDED_DIR / "demo.db"
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        settings = settings.model_copy(update={"url": parse_database_url(f"sqlite:///{path}")})
    elif not settings.is_sqlite:
        settings = settings.model_copy(update={"pool_size": 6, "max_overflow": 2})
    use_db_settings(settings)
    engine = db_engine.build_engine(settings)
    db_engine.use_engine(engine)
    upgrade(engine, "head")

    worker_settings = configured.worker
    if worker_settings.embedded_broker:
        worker_settings = WorkerSettings(broker_url="memory://localhost/")
    app = create_app(worker_settings, configured.engine)
    cache = get_cache()
    cache.reset_stats()
    where = (
        f"database={engine.url.render_as_string(hide_password=True)} "
        f"broker={redacted(worker_settings.broker)} "
        f"cache={'in-process' if configured.cache.embedded else 'redis'}"
    )
    click.echo(f"journey-worker demo: {contacts} contacts; {where}")

    demo_journey = seed(engine, contacts, wait_seconds)
    from tasks.dispatch import dispatch_due

    with StatementCounter(engine) as counter, in_process_worker(app, settings.is_sqlite):
        started = time.perf_counter()
        for i in range(0, contacts, 1000):
            app.send_task(
                names.ENROLL,
                kwargs={
                    "tenant_id": str(demo_journey.tenant_id),
                    "journey_id": str(demo_journey.journey_id),
                    "contact_ids": [str(c) for c in demo_journey.contact_ids[i : i + 1000]],
                },
            )
        finished = 0
        with tqdm(total=contacts, unit="journey", desc="journeys") as bar:
            while finished < contacts:
                if time.perf_counter() - started > timeout:
                    raise click.ClickException(f"demo did not finish within {timeout:.0f}s")
                # The beat process's job, done here: publish the waits that are due.
                dispatch_due.run()
                counts = progress(engine, demo_journey)
                now_finished = sum(counts.get(s, 0) for s in FINISHED)
                bar.update(now_finished - finished)
                finished = now_finished
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            # Let the last deliveries land before reading the summary.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _queued_messages(engine, demo_journey):
                time.sleep(0.2)

    summary = _summary(engine, demo_journey, counter, elapsed, cache.stats(), cache.hit_ratio)
    click.echo(summary)
    if progress(engine, demo_journey).get("FAILED"):
        raise click.ClickException("some journeys FAILED; see the worker log above")


def _queued_messages(engine: Engine, demo: DemoJourney) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count())
            .select_from(Message)
            .where(Message.tenant_id == demo.tenant_id, Message.status == "QUEUED")
        ).scalar_one()


def _summary(
    engine: Engine,
    demo: DemoJourney,
    counter: StatementCounter,
    elapsed: float,
    stats: dict[str, dict[str, int]],
    hit_ratio: Any,
) -> str:
    with engine.connect() as conn:
        executions = conn.execute(
            select(func.count())
            .select_from(JourneyNodeExecution)
            .where(JourneyNodeExecution.tenant_id == demo.tenant_id)
        ).scalar_one()
        messages = dict(
            conn.execute(
                select(Message.status, func.count())
                .where(Message.tenant_id == demo.tenant_id)
                .group_by(Message.status)
            ).all()
        )
    statuses = progress(engine, demo)
    step_statements = sum(counter.by_scope[name] for name in _STEP_TASKS)
    step_commits = sum(counter.commits_by_scope[name] for name in _STEP_TASKS)
    step_tasks = sum(_task_runs[name] for name in _STEP_TASKS)
    node_reads = counter.touching("journey_nodes")
    tenant_reads = counter.touching("tenants")

    def ratio(name: str) -> str:
        value = hit_ratio(name)
        return "n/a" if value is None else f"{value:.1%}"

    lines = [
        "",
        "summary",
        f"  journeys            {sum(statuses.values())} "
        + " ".join(f"{k.lower()}={v}" for k, v in sorted(statuses.items())),
        f"  messages            {sum(messages.values())} "
        + " ".join(f"{k.lower()}={v}" for k, v in sorted(messages.items())),
        f"  node executions     {executions} in {elapsed:.1f}s = {executions / elapsed:.0f}/s",
        f"  statements          {step_statements / max(executions, 1):.2f} per node execution "
        f"+ {step_commits / max(executions, 1):.2f} commits "
        f"({step_statements / max(step_tasks, 1):.1f} per step task, {step_tasks} tasks); "
        f"{counter.total} in all tasks",
        f"  node/tenant reads   {node_reads} / {tenant_reads} statements "
        f"for {executions} executions",
        f"  cache hit ratio     node {ratio('node')}, tenant {ratio('tenant')} "
        f"(hits {stats['node']['hits']}+{stats['tenant']['hits']}, "
        f"misses {stats['node']['misses']}+{stats['tenant']['misses']})",
    ]
    return "\n".join(lines)
