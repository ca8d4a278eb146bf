"""The blast: N contacts enrolled at once through `journeys.enroll` into a four-node journey,
walked end to end by a real worker in batches, then checked for exactly-once effects.

The journey: send_sms -> update_contact -> condition (plan = pro) -> send_sms | exit. Every
contact runs four nodes; the pro half gets two messages and COMPLETES, the other half one
message and EXITS. Throughput is node executions (rows in journey_node_executions) over the time
from the first enroll publish to the last batch's commit. Statements, commits and publishes are
counted in the worker children by the probe (bench/probe.py), per batch task.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine, insert, text
from sqlalchemy.engine import URL

from bench import probe
from bench.e2e import Stall
from bench.errors import BenchError
from bench.seed import libpq_dsn
from db.models import Journey, JourneyNode, Tenant
from tasks import names

BLAST_NODE_TYPES = ("send_sms", "update_contact", "condition", "send_sms", "exit")
EXECUTIONS_PER_CONTACT = 4
# The batch tasks the counts are about (enroll is reported on its own).
BATCH_NODE_TYPES = ("send_sms", "update_contact", "condition", "exit")

Echo = Callable[[str], None]


class BlastError(BenchError):
    """The blast did not finish, or finished with effects that are not exactly once."""


@dataclass(frozen=True)
class BlastJourney:
    tenant_id: uuid.UUID
    journey_id: uuid.UUID
    node_ids: tuple[uuid.UUID, ...]  # in BLAST_NODE_TYPES order
    contact_ids: tuple[uuid.UUID, ...]

    @property
    def node_types(self) -> dict[str, str]:
        return {str(n): t for n, t in zip(self.node_ids, BLAST_NODE_TYPES, strict=True)}

    @property
    def pro(self) -> int:
        """Contacts whose plan is pro: even indexes (see _contact_rows)."""
        return (len(self.contact_ids) + 1) // 2

    @property
    def expected_executions(self) -> int:
        return len(self.contact_ids) * EXECUTIONS_PER_CONTACT

    @property
    def expected_messages(self) -> int:
        return len(self.contact_ids) + self.pro


def seed_blast(engine: Engine, url: URL, contacts: int) -> BlastJourney:
    """A tenant of its own, the journey, and `contacts` contacts (COPY), not yet enrolled."""
    tenant_id, journey_id = uuid.uuid4(), uuid.uuid4()
    send1, update, cond, send2, leave = (uuid.uuid4() for _ in BLAST_NODE_TYPES)
    nodes = [
        (leave, "exit", {}, None),
        (send2, "send_sms", {"body": "Pro offer for {{first_name}}"}, None),
        (
            cond,
            "condition",
            {
                "field": "plan",
                "op": "eq",
                "value": "pro",
                "true_node_id": str(send2),
                "false_node_id": str(leave),
            },
            None,
        ),
        (update, "update_contact", {"set": {"blasted": True}}, cond),
        (send1, "send_sms", {"body": "Hi {{first_name}}, news from us"}, update),
    ]
    with engine.begin() as conn:
        conn.execute(insert(Tenant).values(id=tenant_id, name="Blast tenant", settings={}))
        conn.execute(
            insert(Journey).values(
                id=journey_id,
                tenant_id=tenant_id,
                name="Blast journey",
                status="ACTIVE",
                entry_node_id=send1,
            )
        )
        for node_id, kind, config, nxt in nodes:  # successors first (foreign keys)
            conn.execute(
                insert(JourneyNode).values(
                    id=node_id,
                    tenant_id=tenant_id,
                    journey_id=journey_id,
                    type=kind,
                    config=config,
                    next_node_id=nxt,
                )
            )
    contact_ids = tuple(uuid.uuid4() for _ in range(contacts))
    tenant = tenant_id.hex
    with psycopg.connect(libpq_dsn(url)) as conn, conn.cursor() as cur:
        with cur.copy("COPY contacts (id, tenant_id, phone, attributes) FROM STDIN") as copy:
            for i, cid in enumerate(contact_ids):
                plan = "pro" if i % 2 == 0 else "basic"
                copy.write(
                    f'{cid.hex}\t{tenant}\t+1777{i:07d}\t{{"first_name": "B{i}", '
                    f'"plan": "{plan}"}}\n'
                )
        conn.commit()
    return BlastJourney(tenant_id, journey_id, (send1, update, cond, send2, leave), contact_ids)


def enroll_messages(journey: BlastJourney, per_message: int) -> list[dict[str, Any]]:
    ids = [str(c) for c in journey.contact_ids]
    return [
        {
            "tenant_id": str(journey.tenant_id),
            "journey_id": str(journey.journey_id),
            "contact_ids": ids[i : i + per_message],
        }
        for i in range(0, len(ids), per_message)
    ]


def execution_count(engine: Engine, tenant_id: uuid.UUID) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM journey_node_executions WHERE tenant_id = :t"),
                {"t": tenant_id},
            ).scalar_one()
        )


@dataclass
class BlastResult:
    contacts: int
    executions: int
    seconds: float
    enroll_seconds: float
    tasks: dict[str, int]
    statements: dict[str, int]
    commits: dict[str, int]
    publishes: dict[str, int]
    batch_contacts: dict[str, int]
    # Each batch task's statement count, by node type: the median is the steady state (a cold
    # cache's node and tenant reads land on the first batches only).
    statement_samples: dict[str, list[int]] = field(default_factory=dict)
    # Each task's time in the worker child (task_prerun to task_postrun), seconds, by node type.
    service_samples: dict[str, list[float]] = field(default_factory=dict)
    sql_samples: dict[str, list[float]] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    messages_sent: int = 0
    rss_start_kb: dict[int, int] = field(default_factory=dict)
    rss_end_kb: dict[int, int] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.executions / self.seconds if self.seconds > 0 else float("nan")

    def _batch_sum(self, counter: dict[str, int]) -> int:
        return sum(counter.get(t, 0) for t in BATCH_NODE_TYPES)

    @property
    def statements_per_execution(self) -> float:
        return self._batch_sum(self.statements) / self.executions if self.executions else 0.0

    @property
    def roundtrips_per_execution(self) -> float:
        """Statements + COMMITs (the step store runs in autocommit: no BEGIN, no COMMIT)."""
        total = self._batch_sum(self.statements) + self._batch_sum(self.commits)
        return total / self.executions if self.executions else 0.0

    def per_batch(self, counter: dict[str, int], node_type: str) -> float | None:
        tasks = self.tasks.get(node_type, 0)
        return counter.get(node_type, 0) / tasks if tasks else None

    def median_per_batch(self, node_type: str) -> float | None:
        values = self.statement_samples.get(node_type)
        return float(statistics.median(values)) if values else None

    def service_ms(self, node_type: str) -> float | None:
        """Median time of one task of this kind in the worker child, in ms."""
        values = self.service_samples.get(node_type)
        return statistics.median(values) * 1000 if values else None

    def sql_ms(self, node_type: str) -> float | None:
        """Median time one task of this kind spent in its SQL statements, in ms."""
        values = self.sql_samples.get(node_type)
        return statistics.median(values) * 1000 if values else None

    @property
    def busy_seconds(self) -> float:
        """Task time summed over every task of the run, in the children."""
        return sum(sum(v) for v in self.service_samples.values())

    def max_per_batch(self, node_type: str) -> int | None:
        values = self.statement_samples.get(node_type)
        return max(values) if values else None

    @property
    def mean_batch(self) -> float:
        tasks = self._batch_sum(self.tasks)
        return self._batch_sum(self.batch_contacts) / tasks if tasks else 0.0

    @property
    def rss_growth_mb(self) -> float | None:
        common = set(self.rss_start_kb) & set(self.rss_end_kb)
        if not common:
            return None
        return max(self.rss_end_kb[p] - self.rss_start_kb[p] for p in common) / 1024


def run_blast(
    app: Any,
    reader: probe.SampleReader,
    worker: Any,
    engine: Engine,
    journey: BlastJourney,
    *,
    enroll_size: int,
    timeout: float,
    echo: Echo,
    label: str,
) -> BlastResult:
    """Publish every enroll message at once, wait until every node execution committed (the
    database's count), then tally the worker's samples of this run and verify the effects."""
    run = uuid.uuid4().hex
    expected = journey.expected_executions
    node_types = journey.node_types
    messages = enroll_messages(journey, enroll_size)
    started = time.time()
    with probe.run_context(run), app.producer_or_acquire() as producer:
        for kwargs in messages:
            app.send_task(names.ENROLL, kwargs=kwargs, producer=producer)
    enrolled_at = time.time()
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 5
    done_batches = 0
    stall = Stall()
    while True:
        reader.poll()
        samples = reader.samples.get(run, [])
        done_batches = sum(s.contacts for s in samples if s.task == names.EXECUTE_BATCH)
        if done_batches >= expected and execution_count(engine, journey.tenant_id) >= expected:
            break
        stall.check(len(samples), f"{label}: {done_batches:,} of {expected:,} node executions")
        if not worker.alive():
            raise BlastError(f"{label}: worker exited during the blast:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise BlastError(
                f"{label}: {execution_count(engine, journey.tenant_id)} of {expected} node "
                f"executions within {timeout:.0f}s; worker log:\n{worker.log_tail()}"
            )
        if time.monotonic() > next_note:
            echo(f"   {label}: {done_batches:,} of {expected:,} node executions")
            next_note = time.monotonic() + 5
        time.sleep(0.1)
    # The last batch's sample follows its commit by a moment: let the files settle.
    settle = time.monotonic() + 2
    seen = -1
    while time.monotonic() < settle:
        reader.poll()
        count = len(reader.samples.get(run, []))
        if count == seen:
            break
        seen = count
        time.sleep(0.3)
    samples = reader.samples.pop(run, [])
    batches = [s for s in samples if s.task == names.EXECUTE_BATCH]
    end = max(s.committed_at for s in batches)
    result = BlastResult(
        contacts=len(journey.contact_ids),
        executions=execution_count(engine, journey.tenant_id),
        seconds=end - started,
        enroll_seconds=enrolled_at - started,
        tasks={},
        statements={},
        commits={},
        publishes={},
        batch_contacts={},
    )
    for s in samples:
        key = node_types.get(s.node_id, "?") if s.task == names.EXECUTE_BATCH else s.task
        for counter, value in (
            (result.tasks, 1),
            (result.statements, s.statements),
            (result.commits, s.commits),
            (result.publishes, s.publishes),
            (result.batch_contacts, s.contacts),
        ):
            counter[key] = counter.get(key, 0) + value
        result.statement_samples.setdefault(key, []).append(s.statements)
        result.service_samples.setdefault(key, []).append(s.service)
        result.sql_samples.setdefault(key, []).append(s.sql_seconds)
    return result


def verify(engine: Engine, journey: BlastJourney, deliveries_timeout: float = 120.0) -> list[str]:
    """Exactly once, counted in the database: every contact finished its way, one execution per
    (contact, node), one message per send, every message sent. Returns the problems found."""
    problems: list[str] = []
    params = {"t": journey.tenant_id, "j": journey.journey_id}
    n, pro = len(journey.contact_ids), journey.pro
    with engine.connect() as conn:

        def scalar(sql: str) -> int:
            return int(conn.execute(text(sql), params).scalar_one())

        statuses = dict(
            conn.execute(
                text(
                    "SELECT status, count(*) FROM journey_contacts WHERE journey_id = :j "
                    "GROUP BY status"
                ),
                params,
            ).all()
        )
        want = {"COMPLETED": pro, "EXITED": n - pro}
        if statuses != {k: v for k, v in want.items() if v}:
            problems.append(f"journey contacts: expected {want}, found {statuses}")
        executions = scalar("SELECT count(*) FROM journey_node_executions WHERE tenant_id = :t")
        if executions != journey.expected_executions:
            problems.append(
                f"executions: expected {journey.expected_executions}, found {executions}"
            )
        twice = scalar(
            "SELECT count(*) FROM (SELECT 1 FROM journey_node_executions WHERE tenant_id = :t "
            "GROUP BY journey_contact_id, node_id HAVING count(*) > 1) d"
        )
        if twice:
            problems.append(f"{twice} (contact, node) pairs executed more than once")
        uneven = scalar(
            "SELECT count(*) FROM (SELECT 1 FROM journey_node_executions WHERE tenant_id = :t "
            f"GROUP BY journey_contact_id HAVING count(*) <> {EXECUTIONS_PER_CONTACT}) d"
        )
        if uneven:
            problems.append(f"{uneven} contacts without exactly {EXECUTIONS_PER_CONTACT} steps")
        failed = scalar(
            "SELECT count(*) FROM journey_node_executions WHERE tenant_id = :t "
            "AND status = 'FAILED'"
        )
        if failed:
            problems.append(f"{failed} failed executions")
        messages = scalar("SELECT count(*) FROM messages WHERE tenant_id = :t")
        if messages != journey.expected_messages:
            problems.append(f"messages: expected {journey.expected_messages}, found {messages}")
        per_contact = scalar(
            "SELECT count(*) FROM (SELECT m.contact_id, count(*) AS sent, "
            "bool_or(c.attributes->>'plan' = 'pro') AS pro FROM messages m "
            "JOIN contacts c ON c.id = m.contact_id WHERE m.tenant_id = :t "
            "GROUP BY m.contact_id) x WHERE sent <> CASE WHEN pro THEN 2 ELSE 1 END"
        )
        if per_contact:
            problems.append(f"{per_contact} contacts with the wrong number of messages")
    # Deliveries run behind the steps: give them time, then every message must be SENT.
    deadline = time.monotonic() + deliveries_timeout
    while True:
        with engine.connect() as conn:
            unsent = dict(
                conn.execute(
                    text(
                        "SELECT status, count(*) FROM messages WHERE tenant_id = :t "
                        "AND status <> 'SENT' GROUP BY status"
                    ),
                    params,
                ).all()
            )
        if not unsent or any(s == "FAILED" for s in unsent) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if unsent:
        problems.append(f"messages not SENT: {unsent}")
    return problems
