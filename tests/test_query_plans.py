"""The seed's hot queries use the seed's indexes, on realistic volume, with custom and generic plans.

100,000 journey_node_executions over 2,000 journey contacts (50 steps each, 9 nodes per journey)
and 40,000 journey_contacts over 10 journeys, then ANALYZE and EXPLAIN (FORMAT JSON). The worker's
psycopg connections prepare a statement after a few executions, after which PostgreSQL may switch
to a generic plan (no parameter values), so each query is checked both ways.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.conftest import create_database, drop_database
from tests.services import unique_name

EXECUTION_INDEXES = {
    "idx_journey_node_executions_node_contact_tenant",
    "idx_journey_node_executions_contact_tenant_executed",
    "uq_journey_node_executions_step",
    "ix_journey_node_executions_contact_created",
}
# Indexes whose leading column is journey_contact_id. migration 0005's (the API's executions
# page) serves "newest first by created_at" best of all: PostgreSQL picks it where it exists.
CONTACT_LEADING_INDEXES = {
    "idx_journey_node_executions_contact_tenant_executed",
    "uq_journey_node_executions_step",
    "ix_journey_node_executions_contact_created",
}

RECENT_EXECUTIONS = """
SELECT e.id, e.node_id, e.status, e.executed_at, e.created_at, e.step_seq, n.type
FROM journey_node_executions e LEFT JOIN journey_nodes n ON n.id = e.node_id
WHERE e.journey_contact_id = :jc AND e.tenant_id = :t
ORDER BY e.created_at DESC, e.executed_at DESC LIMIT 10
"""
LOOP_GUARD = """
SELECT id, executed_at FROM journey_node_executions
WHERE node_id = :n AND journey_contact_id = :jc AND tenant_id = :t
ORDER BY executed_at DESC LIMIT 3
"""
ACTIVE_AT_NODE = """
SELECT id FROM journey_contacts
WHERE journey_id = :j AND current_node_id = :n AND status = 'ACTIVE'
"""

POPULATE = [
    "INSERT INTO tenants (id, name) VALUES (:t, 'plans')",
    "INSERT INTO contacts (tenant_id, phone) "
    "SELECT :t, '+1555' || lpad(g::text, 7, '0') FROM generate_series(1, 20000) g",
    "INSERT INTO journeys (tenant_id, name, status) "
    "SELECT :t, 'journey ' || g, 'ACTIVE' FROM generate_series(1, 10) g",
    "INSERT INTO journey_nodes (tenant_id, journey_id, type) "
    "SELECT :t, j.id, 'send_sms' FROM journeys j CROSS JOIN generate_series(1, 9)",
    # Every contact on two journeys, at one of the journey's nodes; about 2 in 7 ACTIVE.
    """
    WITH c AS (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM contacts),
         j AS (SELECT array_agg(id ORDER BY id) AS ids FROM journeys),
         n AS (SELECT journey_id, array_agg(id ORDER BY id) AS ids
               FROM journey_nodes GROUP BY journey_id)
    INSERT INTO journey_contacts (tenant_id, journey_id, contact_id, status, current_node_id)
    SELECT :t, n.journey_id, c.id,
           CASE c.rn % 7 WHEN 0 THEN 'ACTIVE' WHEN 1 THEN 'ACTIVE' WHEN 2 THEN 'WAITING'
                         ELSE 'COMPLETED' END,
           n.ids[1 + c.rn % 9]
    FROM c CROSS JOIN generate_series(0, 1) AS half CROSS JOIN j
    JOIN n ON n.journey_id = j.ids[1 + (c.rn + 5 * half) % 10]
    """,
    # 2,000 journey contacts with 50 steps each, spread over their journey's nodes.
    """
    WITH jc AS (SELECT id, journey_id, row_number() OVER (ORDER BY id) AS rn
                FROM journey_contacts ORDER BY id LIMIT 2000),
         n AS (SELECT journey_id, array_agg(id ORDER BY id) AS ids
               FROM journey_nodes GROUP BY journey_id)
    INSERT INTO journey_node_executions
        (tenant_id, journey_contact_id, node_id, status, executed_at, created_at, step_seq)
    SELECT :t, jc.id, n.ids[1 + (s + jc.rn) % 9],
           CASE WHEN s = 50 THEN 'PENDING' ELSE 'COMPLETED' END,
           CASE WHEN s = 50 THEN NULL ELSE now() - (50 - s) * interval '1 minute' END,
           now() - (50 - s) * interval '1 minute' - jc.rn * interval '1 millisecond',
           s
    FROM jc CROSS JOIN generate_series(1, 50) AS s
    JOIN n ON n.journey_id = jc.journey_id
    """,
]


@dataclass(frozen=True)
class PlanDb:
    engine: Engine
    tenant: uuid.UUID
    journey_contact: uuid.UUID
    node: uuid.UUID
    journey: uuid.UUID
    active_node: uuid.UUID


@pytest.fixture(scope="module")
def plan_db(pg_template: str) -> Iterator[PlanDb]:
    """One populated database for the module: populating it is the expensive part."""
    name = unique_name("jw_plans")
    engine = create_engine(create_database(name, template=pg_template))
    tenant = uuid.uuid4()
    try:
        with engine.begin() as conn:
            superuser = conn.execute(
                text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            ).scalar_one()
            if superuser:
                # Skip the per-row foreign key checks of the bulk load (the rows are consistent
                # by construction); it keeps this module well inside its time budget.
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            for statement in POPULATE:
                conn.execute(text(statement), {"t": tenant})
        with engine.begin() as conn:
            # Fresh statistics, as autovacuum would gather them after a bulk load.
            conn.execute(text("ANALYZE"))
        with engine.connect() as conn:
            counts = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM journey_node_executions), "
                    "(SELECT count(*) FROM journey_contacts)"
                )
            ).one()
            assert tuple(counts) == (100_000, 40_000)
            jc, node = conn.execute(
                text(
                    "SELECT journey_contact_id, node_id FROM journey_node_executions "
                    "ORDER BY journey_contact_id DESC, step_seq LIMIT 1"
                )
            ).one()
            journey, active_node = conn.execute(
                text(
                    "SELECT journey_id, current_node_id FROM journey_contacts "
                    "WHERE status = 'ACTIVE' ORDER BY id LIMIT 1"
                )
            ).one()
        yield PlanDb(engine, tenant, jc, node, journey, active_node)
    finally:
        engine.dispose()
        drop_database(name)


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(db: PlanDb, sql: str, params: dict[str, uuid.UUID], *, generic: bool) -> dict[str, Any]:
    """The JSON plan: with the values bound (custom plan), or as a prepared statement forced to
    its generic plan, the one a prepared statement may settle on after five executions."""
    with db.engine.connect() as conn:
        if not generic:
            result = conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), params).scalar_one()
            return result[0]["Plan"]
        names = list(params)
        numbered = sql
        for i, name in enumerate(names, start=1):
            numbered = numbered.replace(f":{name}", f"${i}")
        conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        conn.exec_driver_sql(f"PREPARE hot ({', '.join('uuid' for _ in names)}) AS {numbered}")
        # The values are uuids we generated, so inlining them is safe.
        literals = ", ".join(f"'{params[name]}'" for name in names)
        result = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE hot({literals})").scalar_one()
        conn.rollback()
        conn.exec_driver_sql("DEALLOCATE hot")
        conn.execute(text("RESET plan_cache_mode"))
        return result[0]["Plan"]


def indexes_used(plan: dict[str, Any], table: str) -> set[str]:
    # Index Scan / Index Only Scan name their relation; a Bitmap Index Scan only its index.
    return {
        node["Index Name"]
        for node in plan_nodes(plan)
        if "Index Name" in node and node.get("Relation Name", table) == table
    }


def seq_scanned(plan: dict[str, Any]) -> set[str]:
    return {node["Relation Name"] for node in plan_nodes(plan) if node["Node Type"] == "Seq Scan"}


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_recent_executions_of_a_journey_contact(plan_db: PlanDb, generic: bool) -> None:
    params = {"jc": plan_db.journey_contact, "t": plan_db.tenant}
    plan = explain(plan_db, RECENT_EXECUTIONS, params, generic=generic)
    used = indexes_used(plan, "journey_node_executions") & EXECUTION_INDEXES
    print(f"recent executions ({'generic' if generic else 'custom'}): {sorted(used)}")
    assert used & CONTACT_LEADING_INDEXES, plan
    assert "journey_node_executions" not in seq_scanned(plan), plan


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_loop_guard(plan_db: PlanDb, generic: bool) -> None:
    params = {"n": plan_db.node, "jc": plan_db.journey_contact, "t": plan_db.tenant}
    plan = explain(plan_db, LOOP_GUARD, params, generic=generic)
    used = indexes_used(plan, "journey_node_executions")
    print(f"loop guard ({'generic' if generic else 'custom'}): {sorted(used)}")
    assert used & {
        "idx_journey_node_executions_node_contact_tenant",
        "idx_journey_node_executions_contact_tenant_executed",
    }, plan
    assert "journey_node_executions" not in seq_scanned(plan), plan


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_active_journey_contacts_at_a_node(plan_db: PlanDb, generic: bool) -> None:
    params = {"j": plan_db.journey, "n": plan_db.active_node}
    plan = explain(plan_db, ACTIVE_AT_NODE, params, generic=generic)
    used = indexes_used(plan, "journey_contacts")
    print(f"active at node ({'generic' if generic else 'custom'}): {sorted(used)}")
    assert "idx_journey_contacts_active" in used, plan
    assert "journey_contacts" not in seq_scanned(plan), plan


def test_the_queries_return_what_they_should(plan_db: PlanDb) -> None:
    """The plans are for queries that find rows: an empty result would prove nothing."""
    with plan_db.engine.connect() as conn:
        recent = conn.execute(
            text(RECENT_EXECUTIONS), {"jc": plan_db.journey_contact, "t": plan_db.tenant}
        ).all()
        guard = conn.execute(
            text(LOOP_GUARD),
            {"n": plan_db.node, "jc": plan_db.journey_contact, "t": plan_db.tenant},
        ).all()
        active = conn.execute(
            text(ACTIVE_AT_NODE), {"j": plan_db.journey, "n": plan_db.active_node}
        ).all()
    assert len(recent) == 10 and recent[0].step_seq == 50
    assert 1 <= len(guard) <= 3
    assert len(active) >= 1


@pytest.mark.parametrize("batch", [1, 200])
def test_the_steps_own_read_uses_the_indexes(plan_db: PlanDb, batch: int) -> None:
    """The production read (db/postgres_step_store.py) for a batch of one and of 200: the recent
    executions (a JSON subquery) and the loop guard (correlated subquery) folded into one
    statement still go through the seed's indexes."""
    from db.postgres_step_store import LOAD_SQL

    with plan_db.engine.connect() as conn:
        jc, tenant = conn.execute(
            text(
                "SELECT id, tenant_id FROM journey_contacts WHERE id IN "
                "(SELECT journey_contact_id FROM journey_node_executions LIMIT 1)"
            )
        ).one()
        others = conn.execute(
            text("SELECT id FROM journey_contacts WHERE tenant_id = :t AND id <> :jc LIMIT :n"),
            {"t": tenant, "jc": jc, "n": batch - 1},
        ).scalars()
        params = {"journey_contact_ids": [jc, *others], "tenant_id": tenant, "loop_limit": 3}
        plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {LOAD_SQL.text}"), params).scalar_one()[0][
            "Plan"
        ]
        rows = {r.id: r for r in conn.execute(LOAD_SQL, params)}
    used = indexes_used(plan, "journey_node_executions")
    print(f"step read of {batch}: {sorted(used)}, seq scans {sorted(seq_scanned(plan))}")
    assert used & CONTACT_LEADING_INDEXES, plan
    assert "journey_contacts_pkey" in indexes_used(plan, "journey_contacts"), plan
    # The tables that grow with traffic are never scanned. For a batch of 200 the planner may
    # read this test's 20,000-row contacts table whole (150 pages: cheaper than 200 lookups);
    # a batch of one shows the index path it takes once the table is large.
    growing = {"journey_node_executions", "journey_contacts"}
    assert not seq_scanned(plan) & (growing if batch > 1 else growing | {"contacts"}), plan
    assert len(rows) == batch
    assert len(rows[jc].recent) == 10  # the recent-executions window is full for this contact
