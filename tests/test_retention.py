"""The retention purge at size: a bound cutoff the executed_at index can range over, and batches
that continue below the previous one, ties at a batch's boundary included."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from db import retention
from db.engine import transaction
from tasks.retention import purge_executions
from tasks.settings import EngineSettings, use_engine_settings
from tests.factories import make_contacts, make_tenant


@pytest.fixture
def log_rows(pg_engine: Engine) -> Iterator[dict[str, Any]]:
    """4,000 executions of one journey contact: 1,500 older than 90 days, 40 of those sharing
    one executed_at (a tie across batch boundaries), the rest recent."""
    tenant = make_tenant(pg_engine)
    contact = make_contacts(pg_engine, tenant, 1)[0]
    journey, jc = uuid.uuid4(), uuid.uuid4()
    with pg_engine.begin() as conn:
        conn.execute(
            text("INSERT INTO journeys (id, tenant_id, name) VALUES (:j, :t, 'r')"),
            {"j": journey, "t": tenant},
        )
        conn.execute(
            text(
                "INSERT INTO journey_contacts (id, tenant_id, journey_id, contact_id, status) "
                "VALUES (:jc, :t, :j, :c, 'COMPLETED')"
            ),
            {"jc": jc, "t": tenant, "j": journey, "c": contact},
        )
        conn.execute(
            text(
                "INSERT INTO journey_node_executions (tenant_id, journey_contact_id, status, "
                "executed_at, step_seq) SELECT :t, :jc, 'COMPLETED', CASE "
                "WHEN g <= 40 THEN now() - interval '120 days' "
                "WHEN g <= 1500 THEN now() - interval '91 days' - g * interval '1 minute' "
                "ELSE now() - g * interval '1 minute' END, g FROM generate_series(1, 4000) g"
            ),
            {"t": tenant, "jc": jc},
        )
        conn.execute(text("ANALYZE journey_node_executions"))
    yield {"tenant": tenant, "jc": jc}


def remaining(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE executed_at < now() - interval '90 days'), "
                "count(*) FROM journey_node_executions"
            )
        ).one()
    return int(row[0]), int(row[1])


def test_purge_deletes_every_old_row_across_ties_and_nothing_recent(
    pg_engine: Engine, log_rows: dict[str, Any]
) -> None:
    use_engine_settings(EngineSettings(purge_after_days=90, purge_batch_size=7))
    try:
        assert purge_executions.run(max_batches=10_000) == {"deleted": 1500}
    finally:
        use_engine_settings(None)
    assert remaining(pg_engine) == (0, 2500)


def test_the_batch_is_a_range_of_the_executed_at_index(
    pg_engine: Engine, log_rows: dict[str, Any]
) -> None:
    """The cutoff and the boundary are values: each batch's range starts on the index, rather
    than filtering every newer row on the way (clock_timestamp() is volatile: no index bound)."""
    with transaction() as session:
        cutoff = retention.purge_cutoff(session, older_than=timedelta(days=90))
        first = retention.purge_executions_batch(session, cutoff=cutoff, batch_size=100)
        assert first.deleted == 100 and first.oldest is not None
        for below in (None, first.oldest):
            stmt = retention.purge_statement(cutoff=cutoff, batch_size=100, below=below)
            compiled = stmt.compile(dialect=pg_engine.dialect)
            plan = (
                session.connection()
                .exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params)
                .scalar_one()
            )
            text_plan = json.dumps(plan)
            assert "idx_journey_node_executions_executed_at" in text_plan, text_plan
            assert '"Index Cond": "((executed_at' in text_plan, text_plan
        session.rollback()
