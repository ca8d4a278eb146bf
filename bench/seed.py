"""The bench's own database and rows: one tenant, one linear journey, fresh walkers per run,
and history bulk-loaded with COPY for the growth measurement."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import URL

from db.clock import seconds_from_now
from db.models import Contact, Journey, JourneyContact, JourneyNode, JourneyNodeExecution, Tenant
from db.settings import parse_database_url
from tasks.settings import EngineSettings

DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# The node types of the bench journey, in order, repeated: each walker sends an SMS, branches
# and updates an attribute every three nodes; the last node has no successor (COMPLETED).
NODE_CYCLE = ("send_sms", "condition", "update_contact")


def server_url(raw: str | None) -> URL:
    # The worker's rules: postgres:// and postgresql:// mean psycopg 3, and no error repeats it.
    url = parse_database_url(raw or os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"the benchmark needs PostgreSQL, got {url.get_backend_name()}")
    return url


def libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(server: URL) -> URL:
    """CREATE DATABASE jw_bench_<random> on the server; returns its URL."""
    name = f"jw_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", pool_size=1)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return server.set(database=name)


def drop_database(server: URL, name: str) -> None:
    admin = create_engine(server, isolation_level="AUTOCOMMIT", pool_size=1)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass(frozen=True)
class BenchJourney:
    tenant_id: uuid.UUID
    journey_id: uuid.UUID
    node_ids: tuple[uuid.UUID, ...]
    node_types: tuple[str, ...]

    @property
    def entry(self) -> uuid.UUID:
        return self.node_ids[0]

    @property
    def sms_nodes(self) -> int:
        return sum(1 for t in self.node_types if t == "send_sms")


@dataclass(frozen=True)
class Walker:
    """One contact on the journey: the journey contact starts ACTIVE at the entry node."""

    index: int
    contact_id: uuid.UUID
    journey_contact_id: uuid.UUID


def node_config(kind: str, position: int, next_id: uuid.UUID | None) -> dict[str, Any]:
    if kind == "send_sms":
        return {"body": f"Hi {{{{first_name}}}}, this is step {position}"}
    if kind == "condition":
        target = str(next_id) if next_id else None
        return {
            "field": "plan",
            "op": "eq",
            "value": "pro",
            "true_node_id": target,
            "false_node_id": target,
        }
    if kind == "update_contact":
        return {"set": {"bench_step": position}}
    raise ValueError(kind)


def seed_journey(engine: Engine, nodes: int) -> BenchJourney:
    if nodes < 1:
        raise ValueError("the journey needs at least one node")
    tenant_id, journey_id = uuid.uuid4(), uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(nodes)]
    types = [NODE_CYCLE[i % len(NODE_CYCLE)] for i in range(nodes)]
    with engine.begin() as conn:
        conn.execute(insert(Tenant).values(id=tenant_id, name="Bench tenant", settings={}))
        conn.execute(
            insert(Journey).values(
                id=journey_id,
                tenant_id=tenant_id,
                name="Bench journey",
                status="ACTIVE",
                entry_node_id=ids[0],
            )
        )
        # Last node first: each node's next_node_id must exist when it is inserted.
        rows = []
        for i in reversed(range(nodes)):
            nxt = ids[i + 1] if i + 1 < nodes else None
            config = node_config(types[i], i, nxt)
            # A condition routes through its config; its own next pointer stays empty.
            pointer = None if types[i] == "condition" else nxt
            rows.append(
                {
                    "id": ids[i],
                    "tenant_id": tenant_id,
                    "journey_id": journey_id,
                    "type": types[i],
                    "config": config,
                    "next_node_id": pointer,
                }
            )
        for row in rows:
            conn.execute(insert(JourneyNode).values(**row))
    return BenchJourney(tenant_id, journey_id, tuple(ids), tuple(types))


def contact_attributes(index: int) -> dict[str, Any]:
    return {"first_name": f"Walker{index}", "plan": "pro" if index % 2 else "basic"}


def seed_walkers(
    engine: Engine, journey: BenchJourney, count: int, settings: EngineSettings
) -> list[Walker]:
    """`count` new contacts, each enrolled ACTIVE at the entry node as enroll would do it."""
    walkers = [Walker(i, uuid.uuid4(), uuid.uuid4()) for i in range(count)]
    if not walkers:
        return walkers
    with engine.begin() as conn:
        conn.execute(
            insert(Contact),
            [
                {
                    "id": w.contact_id,
                    "tenant_id": journey.tenant_id,
                    "phone": f"+1555{w.index:07d}",
                    "email": f"walker{w.index}@example.test",
                    "attributes": contact_attributes(w.index),
                }
                for w in walkers
            ],
        )
        conn.execute(
            insert(JourneyContact),
            [
                {
                    "id": w.journey_contact_id,
                    "tenant_id": journey.tenant_id,
                    "journey_id": journey.journey_id,
                    "contact_id": w.contact_id,
                    "status": "ACTIVE",
                    "current_node_id": journey.entry,
                    "step_seq": 0,
                }
                for w in walkers
            ],
        )
        conn.execute(
            JourneyContact.__table__.update()
            .where(JourneyContact.id.in_([w.journey_contact_id for w in walkers]))
            .values(due_at=seconds_from_now(settings.redispatch_grace_seconds))
        )
    return walkers


def execution_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(JourneyNodeExecution)).scalar_one()


# --- history for the growth measurement ----------------------------------------------------


def _chunks(rows: Iterator[str], size: int) -> Iterator[str]:
    batch: list[str] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def load_history(url: URL, journey: BenchJourney, rows: int, *, seed: int = 7) -> float:
    """COPY `rows` execution rows of finished walkers (with their contacts and journey contacts)
    into the journey, as months of history would leave them. Returns the seconds it took.

    Foreign keys are valid by construction; as a superuser the load skips their per-row trigger
    checks (session_replication_role = replica), as a DBA's bulk load would. ANALYZE follows.
    """
    if rows <= 0:
        return 0.0
    import time

    started = time.perf_counter()
    rng = random.Random(seed ^ rows)
    per_walker = len(journey.node_ids)
    walkers = -(-rows // per_walker)
    pool = max(1, min(walkers, 5000))
    tenant, jid = journey.tenant_id.hex, journey.journey_id.hex
    node_hex = [n.hex for n in journey.node_ids]
    base = datetime.now(UTC) - timedelta(days=90)

    contact_ids = [uuid.uuid4().hex for _ in range(pool)]
    jc_ids = [uuid.uuid4().hex for _ in range(walkers)]
    starts = [base + timedelta(seconds=rng.randrange(0, 89 * 86400)) for _ in range(walkers)]

    def contact_rows() -> Iterator[str]:
        for i, cid in enumerate(contact_ids):
            yield f'{cid}\t{tenant}\t+1666{i:07d}\t{{"first_name": "H{i}", "plan": "basic"}}\n'

    def jc_rows() -> Iterator[str]:
        for i, jc in enumerate(jc_ids):
            n = min(per_walker, rows - i * per_walker)
            done = (starts[i] + timedelta(seconds=n)).isoformat()
            yield (
                f"{jc}\t{tenant}\t{jid}\t{contact_ids[i % pool]}\tCOMPLETED\t{n}\t"
                f"{done}\t{starts[i].isoformat()}\t{done}\n"
            )

    def execution_rows_text() -> Iterator[str]:
        for i, jc in enumerate(jc_ids):
            n = min(per_walker, rows - i * per_walker)
            for step in range(n):
                at = (starts[i] + timedelta(seconds=step)).isoformat()
                yield (
                    f"{uuid.uuid4().hex}\t{tenant}\t{jc}\t{node_hex[step]}\tCOMPLETED\t{{}}\t"
                    f"{at}\t{step}\t{at}\t{at}\n"
                )

    with psycopg.connect(libpq_dsn(url)) as conn:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        row = superuser.fetchone()
        if row and row[0]:
            conn.execute("SET session_replication_role = replica")
        with conn.cursor() as cur:
            copies = (
                ("COPY contacts (id, tenant_id, phone, attributes) FROM STDIN", contact_rows()),
                (
                    "COPY journey_contacts (id, tenant_id, journey_id, contact_id, status, "
                    "step_seq, completed_at, created_at, updated_at) FROM STDIN",
                    jc_rows(),
                ),
                (
                    "COPY journey_node_executions (id, tenant_id, journey_contact_id, node_id, "
                    "status, result, executed_at, step_seq, created_at, updated_at) FROM STDIN",
                    execution_rows_text(),
                ),
            )
            for sql, source in copies:
                with cur.copy(sql) as copy:
                    for chunk in _chunks(source, 20_000):
                        copy.write(chunk)
        conn.commit()
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        conn.execute("ANALYZE contacts, journey_contacts, journey_node_executions")
    return time.perf_counter() - started
