"""`journey-worker demo`: a real worker walks seeded contacts through a journey, then a summary.

With nothing configured it runs on the embedded default (SQLite, an in-process broker, an
in-process cache) in a database file of its own, recreated each run; with DATABASE_URL, REDIS_URL
and CELERY_BROKER_URL it runs on those: it says which database it will migrate and use (asking
first when a terminal is attached, unless --yes), and --cleanup deletes its tenant's rows after.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click
from sqlalchemy import Engine, delete, func, insert, select
from tqdm import tqdm

from cache import get_cache
from db import engine as db_engine
from db.instrumentation import StatementCounter, statement_scope
from db.migrate import upgrade
from db.models import (
    Base,
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
from tasks.errors import InvalidNodeConfig
from tasks.node_config import check_node_config
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


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing nan and inf (which compare false with every bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _checked_wait(seconds: float) -> float:
    """The journey's wait as its node config, checked against the published wait schema."""
    try:
        check_node_config("wait", {"seconds": seconds})
    except InvalidNodeConfig as exc:
        raise click.BadParameter(exc.reason.removeprefix("invalid_node_config: ")) from None
    return seconds


def failure_reasons(engine: Engine, demo: DemoJourney) -> dict[str, int]:
    """How many of the demo's journeys FAILED for each reason, most frequent first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(JourneyContact.status_reason, func.count())
            .where(JourneyContact.journey_id == demo.journey_id, JourneyContact.status == "FAILED")
            .group_by(JourneyContact.status_reason)
            .order_by(func.count().desc(), JourneyContact.status_reason)
        ).all()
    return {reason or "no reason recorded": count for reason, count in rows}


def failure_message(reasons: dict[str, int]) -> str:
    failed = sum(reasons.values())
    listed = "; ".join(f"{count} x {reason}" for reason, count in reasons.items())
    return f"{failed} journeys FAILED: {listed}"


def delete_demo_rows(engine: Engine, tenant_id: uuid.UUID) -> None:
    """Every row of the demo's tenant, children first (tenants are RESTRICT, never cascaded)."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if "tenant_id" not in table.c or table.name == Tenant.__tablename__:
                continue
            # Dead letters keep the id as text (it may be malformed), the rest as a UUID.
            column = table.c.tenant_id
            key = tenant_id if column.foreign_keys else str(tenant_id)
            conn.execute(delete(table).where(column == key))
        conn.execute(delete(Tenant).where(Tenant.id == tenant_id))


@click.command()
@click.option(
    "--contacts",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Contacts to enroll (1 or more).",
)
@click.option(
    "--wait-seconds",
    type=FiniteFloatRange(min=0),
    callback=lambda _ctx, _param, seconds: _checked_wait(seconds),
    default=2.0,
    show_default=True,
    help="The journey's wait, in seconds (0 or more).",
)
@click.option(
    "--timeout",
    type=FiniteFloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Give up after this many seconds.",
)
@click.option(
    "--yes",
    "-y",
    is_flag=True,
    help="Use the database DATABASE_URL names without asking first.",
)
@click.option(
    "--cleanup/--keep",
    default=None,
    help="Delete the demo's tenant and its rows from DATABASE_URL's database afterwards, or "
    "keep them (asked at the end when a terminal is attached; kept otherwise).",
)
def demo(
    contacts: int, wait_seconds: float, timeout: float, yes: bool, cleanup: bool | None
) -> None:
    """Seed a journey, enroll contacts, run a real worker, and print a summary."""
    configured = current_settings()
    settings = configured.db
    own_database = "url" not in settings.model_fields_set
    if own_database:  # DATABASE_URL unset: a fresh database of its own
        EMBEDDED_DIR.mkdir(exist_ok=True)
        path = EMBEDDED_DIR / "demo.db"
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        settings = settings.model_copy(update={"url": parse_database_url(f"sqlite:///{path}")})
    elif not settings.is_sqlite:
        settings = settings.model_copy(update={"pool_size": 6, "max_overflow": 2})
    database = settings.url.render_as_string(hide_password=True)
    if own_database:
        click.echo(f"journey-worker demo: a fresh database of its own, {database}")
    else:
        click.echo(
            f"journey-worker demo: will migrate {database} (DATABASE_URL) to the latest "
            "revision, then add a demo tenant, a journey and its contacts to it"
        )
        if not yes and _interactive():
            click.confirm("Go on?", default=True, abort=True)
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
        f"database={database} "
        f"broker={redacted(worker_settings.broker)} "
        f"cache={'in-process' if configured.cache.embedded else 'redis'}"
    )
    click.echo(f"journey-worker demo: {contacts} contacts; {where}")

    demo_journey = seed(engine, contacts, wait_seconds)
    try:
        elapsed, counter = _run(app, engine, settings.is_sqlite, demo_journey, timeout)
        summary = _summary(engine, demo_journey, counter, elapsed, cache.stats(), cache.hit_ratio)
        click.echo(summary)
        reasons = failure_reasons(engine, demo_journey)
        if reasons:
            raise click.ClickException(failure_message(reasons))
    finally:
        if not own_database:
            _offer_cleanup(engine, demo_journey, cleanup)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _offer_cleanup(engine: Engine, demo: DemoJourney, cleanup: bool | None) -> None:
    if cleanup is None:
        cleanup = _interactive() and click.confirm(
            f"Delete the demo's tenant {demo.tenant_id} and its rows?", default=False
        )
    if cleanup:
        delete_demo_rows(engine, demo.tenant_id)
        click.echo(f"journey-worker demo: deleted the demo's tenant {demo.tenant_id} and its rows")
    else:
        click.echo(
            f"journey-worker demo: kept the demo's tenant {demo.tenant_id} and its rows "
            "(run with --cleanup to delete them)"
        )


def _run(
    app: Any, engine: Engine, sqlite: bool, demo_journey: DemoJourney, timeout: float
) -> tuple[float, StatementCounter]:
    """Enroll the contacts, let a worker walk them, and wait for every journey to finish."""
    from tasks.dispatch import dispatch_due

    contacts = len(demo_journey.contact_ids)
    with StatementCounter(engine) as counter, in_process_worker(app, sqlite):
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
    return elapsed, counter


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
