"""The funnel: the materialized view against the base tables after a refresh (counts computed
independently, with plain SQL), the stats endpoint and CLI, the beat schedule, and a refresh that
never blocks readers or the engine and gives up instead of queueing."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from datetime import date, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import OperationalError

from db import engine as db_engine
from db import stats
from db.models import JourneyNodeExecution, Message
from db.settings import ConfigError
from tests.api.conftest import KEY_A, KEY_B, T0, World, add_history, bearer
from worker.cli import main
from worker.settings import use_settings


@pytest.fixture
def funnel(world: World, pg_engine: Engine) -> World:
    """History over three days: contacts that reach a node on two days, messages in every
    status, an execution whose node was deleted (node_id NULL), and tenant B's own rows."""
    a = world.a
    nodes = a.journey.nodes
    rows: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    with pg_engine.connect() as conn:
        contacts = dict(
            conn.execute(
                text("SELECT id, contact_id FROM journey_contacts WHERE journey_id = :j"),
                {"j": a.journey.journey_id},
            ).all()
        )
    for i, jc in enumerate(a.journey_contacts[1:13]):
        for day in range(3):
            if (i + day) % 3 == 0:
                continue  # not every contact every day
            at = T0 - timedelta(days=day, hours=i % 5)
            for position, name in enumerate(
                ["send", "wait"] if i % 2 else ["send", "wait", "cond"]
            ):
                execution = uuid.uuid4()
                rows.append(
                    {
                        "id": execution,
                        "tenant_id": a.tenant_id,
                        "journey_contact_id": jc,
                        "node_id": nodes[name],
                        "status": ("COMPLETED", "FAILED", "SKIPPED")[(i + position) % 3],
                        "created_at": at + timedelta(seconds=position),
                        "step_seq": 100 * day + position,
                        "executed_at": at,
                    }
                )
                if name == "send":
                    messages.append(
                        {
                            "tenant_id": a.tenant_id,
                            "contact_id": contacts[jc],
                            "journey_node_execution_id": execution,
                            "direction": "OUTBOUND",
                            "body": "hi",
                            "status": ("QUEUED", "SENT", "FAILED")[(i + day) % 3],
                        }
                    )
    rows.append(
        {
            "id": uuid.uuid4(),
            "tenant_id": a.tenant_id,
            "journey_contact_id": a.journey_contacts[1],
            "node_id": None,
            "status": "COMPLETED",
            "created_at": T0,
            "step_seq": 999,
            "executed_at": T0,
        }
    )
    with pg_engine.begin() as conn:
        conn.execute(insert(JourneyNodeExecution), rows)
        conn.execute(insert(Message), messages)
    add_history(pg_engine, world.b, world.b.journey_contacts[1], 9)
    return world


def independent_counts(engine: Engine) -> dict[tuple[Any, ...], dict[str, Any]]:
    """(tenant, journey, node, day) -> reached, executions, messages, from the base tables, with
    "reached for the first time that day" written as NOT EXISTS rather than as a minimum."""
    day = "(e.created_at AT TIME ZONE 'UTC')::date"
    counts: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {"reached": 0, "executions": Counter(), "messages": Counter()}
    )
    with engine.connect() as conn:
        for t, j, n, d, status, count in conn.execute(
            text(f"""
            SELECT jc.tenant_id, jc.journey_id, e.node_id, {day}, e.status, count(*)
            FROM journey_node_executions e JOIN journey_contacts jc ON jc.id = e.journey_contact_id
            WHERE e.node_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5""")
        ):
            counts[(t, j, n, d)]["executions"][status] += count
        for t, j, n, d, status, count in conn.execute(
            text(f"""
            SELECT jc.tenant_id, jc.journey_id, e.node_id, {day}, m.status, count(*)
            FROM messages m JOIN journey_node_executions e ON e.id = m.journey_node_execution_id
            JOIN journey_contacts jc ON jc.id = e.journey_contact_id
            WHERE e.node_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5""")
        ):
            counts[(t, j, n, d)]["messages"][status] += count
        for t, j, n, d, reached in conn.execute(
            text(f"""
            SELECT jc.tenant_id, jc.journey_id, e.node_id, {day}, count(DISTINCT e.journey_contact_id)
            FROM journey_node_executions e JOIN journey_contacts jc ON jc.id = e.journey_contact_id
            WHERE e.node_id IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM journey_node_executions earlier
                WHERE earlier.journey_contact_id = e.journey_contact_id
                  AND earlier.node_id = e.node_id
                  AND (earlier.created_at AT TIME ZONE 'UTC')::date < {day})
            GROUP BY 1, 2, 3, 4""")
        ):
            counts[(t, j, n, d)]["reached"] = reached
    return counts


def view_rows(engine: Engine) -> dict[tuple[Any, ...], dict[str, Any]]:
    with engine.connect() as conn:
        return {
            (r.tenant_id, r.journey_id, r.node_id, r.day): {
                "reached": r.reached,
                "executions": Counter(r.executions),
                "messages": Counter(r.messages),
            }
            for r in conn.execute(text(f"SELECT * FROM {stats.VIEW}"))
        }


def refresh_task() -> dict[str, object]:
    from tasks.stats import refresh_stats

    return refresh_stats.apply().get()  # type: ignore[no-any-return]


def test_before_the_first_refresh_every_node_is_listed_at_zero(
    client: TestClient, funnel: World
) -> None:
    body = client.get(f"/v1/journeys/{funnel.a.journey.journey_id}/stats", headers=bearer(KEY_A))
    assert body.status_code == 200, body.text
    stats_body = body.json()
    assert stats_body["refreshed_at"] is None
    nodes = funnel.a.journey.nodes
    # Funnel order: from the entry node along next_node_id, then the condition's branches.
    assert [n["node_id"] for n in stats_body["nodes"]] == [
        str(nodes[name]) for name in ("send", "wait", "cond", "send2", "bye")
    ]
    assert all(n["reached"] == 0 and n["executions"] == {} for n in stats_body["nodes"])


def test_after_a_refresh_the_view_matches_the_base_tables(
    client: TestClient, funnel: World, pg_engine: Engine
) -> None:
    first = refresh_task()
    assert first["refreshed"] is True and first["concurrently"] is False  # populates
    # Rows change between refreshes; the concurrent refresh must pick them up.
    add_history(pg_engine, funnel.a, funnel.a.journey_contacts[20], 6)
    second = refresh_task()
    assert second["refreshed"] is True and second["concurrently"] is True

    expected = independent_counts(pg_engine)
    assert view_rows(pg_engine) == expected
    assert len({key[3] for key in expected}) >= 3  # several days, or per day proves little

    journey = funnel.a.journey.journey_id
    body = client.get(f"/v1/journeys/{journey}/stats?days=366", headers=bearer(KEY_A)).json()
    assert body["refreshed_at"] is not None
    with pg_engine.connect() as conn:
        for node in body["nodes"]:
            reached = conn.execute(
                text(
                    "SELECT count(DISTINCT journey_contact_id) FROM journey_node_executions "
                    "WHERE node_id = :n"
                ),
                {"n": node["node_id"]},
            ).scalar_one()
            by_status = dict(
                conn.execute(
                    text(
                        "SELECT status, count(*) FROM journey_node_executions WHERE node_id = :n "
                        "GROUP BY status"
                    ),
                    {"n": node["node_id"]},
                ).all()
            )
            assert node["reached"] == reached and node["executions"] == by_status, node
    assert sum(n["reached"] for n in body["nodes"]) > 0
    # The days add up to the totals, and only tenant A's rows are in tenant A's answer.
    per_node: dict[str, Counter[str]] = defaultdict(Counter)
    for day in body["days"]:
        for node in day["nodes"]:
            per_node[node["node_id"]].update(node["executions"])
    assert {k: dict(v) for k, v in per_node.items()} == {
        n["node_id"]: n["executions"] for n in body["nodes"] if n["executions"]
    }
    assert [date.fromisoformat(d["day"]) for d in body["days"]] == sorted(
        date.fromisoformat(d["day"]) for d in body["days"]
    )
    other = client.get(f"/v1/journeys/{funnel.b.journey.journey_id}/stats", headers=bearer(KEY_B))
    b_total = sum(sum(n["executions"].values()) for n in other.json()["nodes"])
    assert b_total == 5 + 9


def test_a_refresh_blocks_neither_readers_nor_the_engine(funnel: World, pg_engine: Engine) -> None:
    stats.refresh(pg_engine, statement_timeout_ms=60_000, lock_timeout_ms=1000)
    # A reader in the middle of a transaction does not hold up a refresh...
    with pg_engine.connect() as reader:
        reader.execute(text(f"SELECT count(*) FROM {stats.VIEW}"))
        result = stats.refresh(pg_engine, statement_timeout_ms=60_000, lock_timeout_ms=1000)
        assert result.refreshed and result.concurrently
        reader.rollback()
    # ...and a refresh that has not committed yet holds up neither readers nor writers.
    with pg_engine.connect() as refresher, pg_engine.connect() as other:
        refresher.execute(text(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {stats.VIEW}"))
        other.execute(text("SET lock_timeout = '1s'"))
        assert other.execute(text(f"SELECT count(*) FROM {stats.VIEW}")).scalar_one() > 0
        other.execute(
            insert(JourneyNodeExecution).values(
                tenant_id=funnel.a.tenant_id,
                journey_contact_id=funnel.a.journey_contacts[30],
                node_id=funnel.a.journey.nodes["send"],
                status="COMPLETED",
                step_seq=0,
            )
        )
        other.commit()
        refresher.commit()


def test_a_refresh_gives_up_on_its_lock_timeout_and_skips_when_one_is_running(
    funnel: World, pg_engine: Engine
) -> None:
    stats.refresh(pg_engine, statement_timeout_ms=60_000, lock_timeout_ms=1000)
    with pg_engine.connect() as ddl:
        # An operator's own refresh (or DDL) holds the view's lock and has not committed.
        ddl.execute(text(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {stats.VIEW}"))
        began = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"):
            stats.refresh(pg_engine, statement_timeout_ms=60_000, lock_timeout_ms=200)
        assert time.monotonic() - began < 5
        ddl.rollback()
    with pg_engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": stats.REFRESH_LOCK_KEY})
        assert stats.refresh(pg_engine, statement_timeout_ms=60_000, lock_timeout_ms=200) == (
            stats.RefreshResult(refreshed=False)
        )
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": stats.REFRESH_LOCK_KEY})
        holder.commit()


def test_a_refresh_that_runs_too_long_is_stopped_by_its_statement_timeout(
    funnel: World, pg_engine: Engine
) -> None:
    # Hold a base-table lock that a refresh's read has to wait for, with no lock_timeout but
    # a short statement_timeout: the statement timeout is what ends it.
    stats.refresh(pg_engine, statement_timeout_ms=60_000, lock_timeout_ms=1000)
    with pg_engine.connect() as ddl:
        ddl.execute(text("LOCK TABLE journey_contacts IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(OperationalError, match="statement timeout"):
            stats.refresh(pg_engine, statement_timeout_ms=300, lock_timeout_ms=0)
        ddl.rollback()


def test_beat_schedules_the_refresh_from_its_setting() -> None:
    from tasks import names
    from worker.app import create_app
    from worker.settings import WorkerSettings

    def worker(interval: str) -> WorkerSettings:
        return WorkerSettings.from_env({"STATS_REFRESH_INTERVAL_SECONDS": interval})

    app = create_app(worker("90"))
    entry = app.conf.beat_schedule["refresh-stats"]
    assert entry["task"] == names.REFRESH_STATS
    assert entry["schedule"].total_seconds() == 90
    assert "tasks.stats" in app.conf.include
    import tasks.stats  # noqa: F401

    assert names.REFRESH_STATS in app.tasks
    assert "refresh-stats" not in create_app(worker("0")).conf.beat_schedule
    with pytest.raises(ConfigError, match="STATS_REFRESH_INTERVAL_SECONDS"):
        worker("often")


def test_the_stats_command_prints_the_funnel(funnel: World, pg_url: str) -> None:
    db_engine.use_engine(None)
    use_settings(None)
    try:
        result = CliRunner().invoke(
            main,
            ["stats", str(funnel.a.journey.journey_id), "--refresh", "--days", "366"],
            env={"DATABASE_URL": pg_url, "COLUMNS": "220"},
        )
    finally:
        engine = db_engine._engine
        db_engine.use_engine(None)
        use_settings(None)
        if engine is not None:
            engine.dispose()
    assert result.exit_code == 0, result.output
    out = result.output
    assert "as of 20" in out and "(UTC)" in out
    for node_type in ("send_sms", "wait", "condition", "exit"):
        assert node_type in out
    assert "COMPLETED" in out and "SENT" in out
    unknown = CliRunner().invoke(main, ["stats", str(uuid.uuid4())], env={"DATABASE_URL": pg_url})
    assert unknown.exit_code == 1 and "no such journey" in unknown.output
