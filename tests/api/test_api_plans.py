"""Every page query of the API is an index range scan that starts at the cursor: no sort, no
sequential scan, on the first page and deep in the listing, with custom and generic plans.

One database for the module: 10,000 journeys, 60,000 journey contacts (40,000 on one journey),
60,000 executions (2,000 journey contacts x 30 steps) and 20,000 messages, then ANALYZE. A plan
whose page starts deep must use the cursor as an index condition, not as a filter over the rows
before it (which is what OFFSET would cost): that is what keeps page 10,000 as fast as page 1.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, Select, create_engine, text

from db import pages
from db.pages import Keyset
from tests.conftest import create_database, drop_database
from tests.services import unique_name

POPULATE = [
    "INSERT INTO tenants (id, name) VALUES (:t, 'plans'), (:other, 'other')",
    "INSERT INTO journeys (tenant_id, name, created_at) "
    "SELECT CASE WHEN g % 2 = 0 THEN :t ELSE :other END, 'j' || g, "
    "now() - g * interval '1 second' FROM generate_series(1, 10000) g",
    "UPDATE journeys SET id = :j WHERE id = (SELECT id FROM journeys WHERE tenant_id = :t LIMIT 1)",
    "INSERT INTO journey_nodes (tenant_id, journey_id, type) "
    "SELECT :t, :j, 'send_sms' FROM generate_series(1, 5)",
    "INSERT INTO contacts (tenant_id, phone) SELECT :t, '+1' || g FROM generate_series(1, 60000) g",
    # 40,000 on the journey under test, 20,000 on others; a second's worth share one created_at.
    """
    INSERT INTO journey_contacts (tenant_id, journey_id, contact_id, status, created_at)
    SELECT :t,
           CASE WHEN c.rn <= 40000 THEN :j
                ELSE (SELECT id FROM journeys WHERE tenant_id = :t AND id <> :j LIMIT 1) END,
           c.id,
           (ARRAY['ACTIVE','WAITING','COMPLETED','COMPLETED','COMPLETED','FAILED','EXITED'])
               [1 + c.rn % 7],
           now() - (c.rn / 10) * interval '1 second'
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM contacts) c
    """,
    """
    WITH jc AS (SELECT id FROM journey_contacts WHERE journey_id = :j ORDER BY id LIMIT 2000),
         n AS (SELECT array_agg(id) AS ids FROM journey_nodes WHERE journey_id = :j)
    INSERT INTO journey_node_executions
        (tenant_id, journey_contact_id, node_id, status, executed_at, created_at, step_seq)
    SELECT :t, jc.id, n.ids[1 + s % 5], 'COMPLETED', now(), now() - s * interval '1 minute', s
    FROM jc CROSS JOIN generate_series(1, 30) s CROSS JOIN n
    """,
    """
    INSERT INTO messages (tenant_id, contact_id, journey_node_execution_id, direction, body)
    SELECT e.tenant_id, jc.contact_id, e.id, 'OUTBOUND', 'hi'
    FROM journey_node_executions e JOIN journey_contacts jc ON jc.id = e.journey_contact_id
    WHERE e.step_seq % 3 = 0
    """,
]


@dataclass(frozen=True)
class PlanDb:
    engine: Engine
    tenant: uuid.UUID
    journey: uuid.UUID
    journey_contact: uuid.UUID


@pytest.fixture(scope="module")
def plan_db(pg_template: str) -> Iterator[PlanDb]:
    name = unique_name("jw_api_plans")
    engine = create_engine(create_database(name, template=pg_template))
    tenant, other, journey = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        with engine.begin() as conn:
            for statement in POPULATE:
                conn.execute(text(statement), {"t": tenant, "other": other, "j": journey})
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        with engine.connect() as conn:
            jc = conn.execute(
                text("SELECT journey_contact_id FROM journey_node_executions LIMIT 1")
            ).scalar_one()
        yield PlanDb(engine, tenant, journey, jc)
    finally:
        engine.dispose()
        drop_database(name)


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    return f"'{value}'"  # uuids and statuses we made: safe to inline


def _type(value: Any) -> str:
    return {int: "integer", datetime: "timestamptz", uuid.UUID: "uuid"}.get(type(value), "text")


def explain(engine: Engine, statement: Select[Any], *, generic: bool) -> dict[str, Any]:
    compiled = statement.compile(dialect=engine.dialect)
    sql, params = str(compiled), compiled.params
    with engine.connect() as conn:
        if not generic:
            return conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar_one()[0][
                "Plan"
            ]
        names = list(params)
        for position, name in enumerate(names, 1):
            sql = sql.replace(f"%({name})s", f"${position}")
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql(
            f"PREPARE page ({', '.join(_type(params[n]) for n in names)}) AS {sql}"
        )
        literals = ", ".join(_literal(params[n]) for n in names)
        plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE page({literals})").scalar_one()
        conn.rollback()
        # Neither survives a rollback on a pooled connection: undo both.
        conn.exec_driver_sql("DEALLOCATE page")
        conn.exec_driver_sql("RESET plan_cache_mode")
        conn.commit()
        return plan[0]["Plan"]


@dataclass(frozen=True)
class PageQuery:
    build: Callable[[PlanDb, Keyset | None], Select[Any]]
    table: str
    index: str


QUERIES = {
    "journeys": PageQuery(
        lambda db, after: pages.journeys_statement(db.tenant, after, 100),
        "journeys",
        "ix_journeys_tenant_created",
    ),
    "journey_contacts": PageQuery(
        lambda db, after: pages.journey_contacts_statement(db.tenant, db.journey, None, after, 100),
        "journey_contacts",
        "ix_journey_contacts_journey_created",
    ),
    "journey_contacts_by_status": PageQuery(
        lambda db, after: pages.journey_contacts_statement(
            db.tenant, db.journey, "COMPLETED", after, 100
        ),
        "journey_contacts",
        "ix_journey_contacts_journey_status_created",
    ),
    "executions": PageQuery(
        lambda db, after: pages.executions_statement(db.tenant, db.journey_contact, after, 10),
        "journey_node_executions",
        "ix_journey_node_executions_contact_created",
    ),
    "messages": PageQuery(
        lambda db, after: pages.messages_statement(db.tenant, db.journey_contact, after, 3),
        "journey_node_executions",
        "ix_journey_node_executions_contact_created",
    ),
}


def deep_key(db: PlanDb, query: PageQuery) -> Keyset:
    """The key of the middle row of the listing: a deep page starts after it, either way."""
    with db.engine.connect() as conn:
        rows = conn.execute(query.build(db, None).limit(None).order_by(None)).mappings().all()
    keyed = sorted(
        (
            row.get("step_created_at", row["created_at"]),
            row.get("journey_node_execution_id") or row["id"],
        )
        for row in rows
    )
    created_at, id_ = keyed[len(keyed) // 2]
    return Keyset(created_at, id_)


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("depth", ["first", "deep"])
@pytest.mark.parametrize("name", list(QUERIES))
def test_each_page_is_an_index_range_scan(
    plan_db: PlanDb, name: str, depth: str, generic: bool
) -> None:
    query = QUERIES[name]
    after = deep_key(plan_db, query) if depth == "deep" else None
    plan = explain(plan_db.engine, query.build(plan_db, after), generic=generic)
    nodes = list(plan_nodes(plan))
    scans = [n for n in nodes if n.get("Relation Name") == query.table]
    print(f"{name} {depth} {'generic' if generic else 'custom'}: {[n['Node Type'] for n in nodes]}")
    assert any(
        n["Node Type"] in ("Index Scan", "Index Only Scan") and n.get("Index Name") == query.index
        for n in scans
    ), plan
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort", "Seq Scan")], (
        plan
    )
    if after is not None:
        # The cursor is where the scan starts (an index condition), not a filter after it.
        scan = next(n for n in scans if n.get("Index Name") == query.index)
        assert "ROW(" in scan["Index Cond"] or "created_at" in scan["Index Cond"], scan


def test_the_plans_are_for_pages_that_find_rows(plan_db: PlanDb) -> None:
    """A plan of an empty result would prove nothing: each query returns a full page."""
    with plan_db.engine.connect() as conn:
        for name, query in QUERIES.items():
            rows = conn.execute(query.build(plan_db, deep_key(plan_db, query))).all()
            limit = query.build(plan_db, None)._limit_clause.value  # type: ignore[attr-defined]
            assert len(rows) == limit, name
