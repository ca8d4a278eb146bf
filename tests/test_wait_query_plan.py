"""An event finds its contact's waits in one range of a partial index, however many contacts
wait: the plan (custom and generic) and, printed, the lookup's time.

WAITING_ROWS journey contacts (default 100,000; docs/benchmarks.md ran 1,000,000 with
WAIT_PLAN_ROWS=1000000) wait at a wait_for_event node, each with its entry execution, beside
as many finished enrollments; then ANALYZE and EXPLAIN the lookup db/contact_events.py runs.
"""

from __future__ import annotations

import os
import re
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from db.contact_events import waiting_steps, waiting_steps_query
from tests.conftest import create_database, drop_database
from tests.services import unique_name

WAITING_ROWS = int(os.environ.get("WAIT_PLAN_ROWS", "100000"))

POPULATE = [
    "INSERT INTO tenants (id, name) VALUES (:t, 'waits')",
    "INSERT INTO journeys (id, tenant_id, name, status) VALUES (:j, :t, 'waits', 'ACTIVE')",
    "INSERT INTO journey_nodes (id, tenant_id, journey_id, type, config) VALUES "
    "(:n, :t, :j, 'wait_for_event', "
    """'{"event": "link_clicked", "timeout_seconds": 86400}')""",
    "INSERT INTO contacts (tenant_id, phone) "
    "SELECT :t, '+1555' || lpad(g::text, 7, '0') FROM generate_series(1, :rows) g",
    # Each contact waits once and has one finished enrollment (what a recurring journey leaves).
    """
    INSERT INTO journey_contacts (tenant_id, journey_id, contact_id, status, current_node_id,
                                  step_seq, due_at)
    SELECT :t, :j, c.id, s.status, CASE WHEN s.status = 'WAITING' THEN CAST(:n AS uuid) END,
           1, CASE WHEN s.status = 'WAITING' THEN now() + interval '1 day' END
    FROM contacts c CROSS JOIN (VALUES ('WAITING'), ('COMPLETED')) AS s(status)
    """,
    """
    INSERT INTO journey_node_executions (tenant_id, journey_contact_id, node_id, status,
                                         executed_at, step_seq)
    SELECT :t, jc.id, :n, 'COMPLETED', now() - interval '1 minute', 0
    FROM journey_contacts jc WHERE jc.status = 'WAITING'
    """,
]


@dataclass
class WaitDb:
    engine: Engine
    tenant: uuid.UUID
    contact: uuid.UUID


@pytest.fixture(scope="module")
def wait_db(pg_template: str) -> Iterator[WaitDb]:
    name = unique_name("jw_waits")
    engine = create_engine(create_database(name, template=pg_template))
    tenant, journey, node = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        started = time.perf_counter()
        with engine.begin() as conn:
            superuser = conn.execute(
                text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            ).scalar_one()
            if superuser:
                # The rows are consistent by construction: skip per-row foreign key checks.
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            for statement in POPULATE:
                conn.execute(
                    text(statement), {"t": tenant, "j": journey, "n": node, "rows": WAITING_ROWS}
                )
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
            waiting = conn.execute(
                text("SELECT count(*) FROM journey_contacts WHERE status = 'WAITING'")
            ).scalar_one()
            contact = conn.execute(
                text("SELECT contact_id FROM journey_contacts WHERE status = 'WAITING' LIMIT 1")
            ).scalar_one()
        assert waiting == WAITING_ROWS
        print(f"\npopulated {WAITING_ROWS:,} waiting rows in {time.perf_counter() - started:.1f}s")
        yield WaitDb(engine, tenant, contact)
    finally:
        engine.dispose()
        drop_database(name)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _explain(db: WaitDb, *, generic: bool) -> dict[str, Any]:
    """The JSON plan of the very statement db/contact_events.py runs: with its values (custom
    plan), or prepared and forced to the generic plan a prepared statement may settle on."""
    query = waiting_steps_query(db.tenant, contact_id=db.contact)
    with db.engine.connect() as conn:
        compiled = query.compile(dialect=conn.dialect)
        sql, params = str(compiled), dict(compiled.params)
        if not generic:
            result = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar_one()
            return result[0]["Plan"]
        names = list(params)
        numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", sql)
        conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        conn.exec_driver_sql(f"PREPARE waits AS {numbered}")
        literals = ", ".join(f"'{params[n]}'" for n in names)  # our own uuids and constants
        result = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE waits({literals})")
        plan = result.scalar_one()[0]["Plan"]
        conn.exec_driver_sql("DEALLOCATE waits")
        conn.execute(text("RESET plan_cache_mode"))
        return plan


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_an_event_finds_its_waits_in_one_index_range(wait_db: WaitDb, generic: bool) -> None:
    plan = _explain(wait_db, generic=generic)
    scans = {
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in _nodes(plan)
        if "Scan" in n["Node Type"]
    }
    print(f"\nwait lookup plan ({'generic' if generic else 'custom'}): {sorted(map(str, scans))}")
    # journey_nodes holds one row here, which PostgreSQL rightly reads whole; the big tables
    # are never scanned.
    big = {"journey_contacts", "journey_node_executions", "contacts"}
    assert not any(kind == "Seq Scan" and rel in big for kind, rel, _index in scans), plan
    journey_contact_indexes = {
        index for _kind, relation, index in scans if relation in (None, "journey_contacts")
    }
    assert "ix_journey_contacts_waiting_contact" in journey_contact_indexes, plan


def test_the_plan_with_its_actual_rows(wait_db: WaitDb) -> None:
    """EXPLAIN ANALYZE of the lookup, printed for docs/benchmarks.md."""
    query = waiting_steps_query(wait_db.tenant, contact_id=wait_db.contact)
    with wait_db.engine.connect() as conn:
        compiled = query.compile(dialect=conn.dialect)
        lines = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {compiled}", dict(compiled.params)
        ).scalars()
        plan = "\n".join(lines)
    print(f"\nEXPLAIN ANALYZE at {WAITING_ROWS:,} waiting rows:\n{plan}")
    assert "ix_journey_contacts_waiting_contact" in plan


def test_the_lookup_is_fast_at_size(wait_db: WaitDb) -> None:
    """Timed, never asserted tightly: the machine is shared."""
    times = []
    with wait_db.engine.connect() as conn:
        for _ in range(200):
            started = time.perf_counter()
            steps = waiting_steps(conn, wait_db.tenant, wait_db.contact)
            times.append(time.perf_counter() - started)
    assert len(steps) == 1 and steps[0].contact_id == wait_db.contact
    times.sort()
    print(
        f"\nwait lookup at {WAITING_ROWS:,} waiting rows: median "
        f"{statistics.median(times) * 1000:.2f} ms, p95 {times[189] * 1000:.2f} ms"
    )
    assert statistics.median(times) < 1.0
