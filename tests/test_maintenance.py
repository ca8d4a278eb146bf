"""Scheduled maintenance: VACUUM (ANALYZE) where dead rows pile up and ANALYZE where rows changed,
decided from pg_stat_user_tables, run outside a transaction, skipping a locked table at once;
0013's per-table autovacuum settings; `journey-worker report`'s maintenance section."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from db.maintenance import HOT_TABLES, TableStats, run_maintenance, table_stats
from tasks.maintenance import decide, maintain_tables
from tasks.settings import EngineSettings, use_engine_settings
from tests.factories import make_contacts, make_tenant
from tests.test_migrations import pg_connect
from tests.worker_process import wait_until
from worker.report import collect, render_text


def stats(live: int, dead: int, changed: int) -> TableStats:
    return TableStats("t", live, dead, changed, *([None] * 6), 0, 0)


SETTINGS = EngineSettings(
    maintenance_vacuum_min_dead_rows=1000,
    maintenance_vacuum_dead_ratio=0.1,
    maintenance_analyze_min_changed_rows=500,
    maintenance_analyze_changed_ratio=0.05,
)


@pytest.mark.parametrize(
    ("live", "dead", "changed", "command"),
    [
        (9000, 1000, 0, "VACUUM"),  # 10% dead, and enough rows
        (9001, 999, 5000, "ANALYZE"),  # too few dead rows to vacuum; many changed
        (100_000, 5000, 0, None),  # 5,000 dead, but under 10%
        (100_000, 0, 4999, None),  # changed, but under 5%
        (1000, 0, 499, None),  # 50% changed, but under 500 rows
        (0, 0, 600, "ANALYZE"),  # a table that was just loaded has no statistics yet
        (0, 0, 0, None),
    ],
)
def test_decisions_follow_the_thresholds(
    live: int, dead: int, changed: int, command: str | None
) -> None:
    assert decide(stats(live, dead, changed), SETTINGS).command == command


@pytest.fixture
def maintenance_settings() -> Iterator[EngineSettings]:
    settings = EngineSettings(
        maintenance_vacuum_min_dead_rows=200,
        maintenance_vacuum_dead_ratio=0.1,
        maintenance_analyze_min_changed_rows=100_000_000,
        maintenance_lock_timeout_ms=200,
    )
    use_engine_settings(settings)
    yield settings
    use_engine_settings(None)


def without_autovacuum(engine: Engine) -> None:
    """Autovacuum would race these tests for the dead rows they make (and hold the lock
    VACUUM needs): off for contacts in this test's own database."""
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE contacts SET (autovacuum_enabled = false)"))


def contact_stats(engine: Engine) -> TableStats:
    (found,) = table_stats(engine, ["contacts"])
    return found


def test_beat_task_vacuums_where_dead_rows_pile_up(
    pg_engine: Engine, maintenance_settings: EngineSettings
) -> None:
    without_autovacuum(pg_engine)
    tenant = make_tenant(pg_engine)
    make_contacts(pg_engine, tenant, 1000)
    with pg_engine.begin() as conn:
        conn.execute(text("DELETE FROM contacts WHERE phone > '+15550000400'"))
    # Counters reach pg_stat_user_tables when the writing session goes idle (at most ~1 s).
    wait_until(lambda: contact_stats(pg_engine).dead_rows >= 500, timeout=15)
    before = contact_stats(pg_engine)
    assert before.last_manual_vacuum is None

    result = maintain_tables()
    done = {(r["table"], r["command"]) for r in result["ran"]}  # type: ignore[index, union-attr]
    assert ("contacts", "VACUUM") in done
    assert all(r["table"] in HOT_TABLES for r in result["ran"])  # type: ignore[union-attr, index]
    wait_until(lambda: contact_stats(pg_engine).last_manual_vacuum is not None, timeout=15)
    after = contact_stats(pg_engine)
    assert after.dead_rows == 0 and after.last_manual_analyze is not None
    # Nothing left to do: the next run does nothing to contacts.
    again = maintain_tables()
    assert "contacts" not in {r["table"] for r in again["ran"]}  # type: ignore[union-attr, index]


def test_a_locked_table_is_skipped_at_once_and_leaves_no_waiter(
    pg_url: str, pg_engine: Engine, maintenance_settings: EngineSettings
) -> None:
    with pg_connect(pg_url) as holder, holder.transaction():
        # What autovacuum, CREATE INDEX CONCURRENTLY or DDL would hold: VACUUM conflicts.
        holder.execute("LOCK TABLE contacts IN SHARE UPDATE EXCLUSIVE MODE")
        started = time.monotonic()
        result = run_maintenance(
            pg_engine, "contacts", "VACUUM", lock_timeout_ms=200, statement_timeout_ms=60_000
        )
        waited = time.monotonic() - started
        assert not result.ran and "lock_timeout" in result.detail
        assert waited < 5
        waiting = holder.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'contacts'::regclass"
        ).fetchone()
        assert waiting == (0,)
    # The pooled connection has its usual settings back.
    with pg_engine.connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar_one() == "10s"
    assert run_maintenance(
        pg_engine, "contacts", "ANALYZE", lock_timeout_ms=200, statement_timeout_ms=60_000
    ).ran


def test_vacuum_runs_outside_a_transaction_while_writers_go_on(
    pg_url: str, pg_engine: Engine, maintenance_settings: EngineSettings
) -> None:
    """VACUUM takes no lock a writer waits for: inserts keep committing while it runs."""
    without_autovacuum(pg_engine)
    tenant = make_tenant(pg_engine)
    make_contacts(pg_engine, tenant, 2000)
    with pg_engine.begin() as conn:
        conn.execute(text("UPDATE contacts SET attributes = attributes || '{\"x\": 1}'"))
    stop = threading.Event()
    commits: list[float] = []

    def write() -> None:
        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
            while not stop.is_set():
                began = time.monotonic()
                conn.execute(
                    "INSERT INTO contacts (tenant_id, phone) VALUES (%s, '+1999')", (tenant,)
                )
                commits.append(time.monotonic() - began)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = run_maintenance(
            pg_engine, "contacts", "VACUUM", lock_timeout_ms=200, statement_timeout_ms=60_000
        )
    finally:
        stop.set()
        writer.join()
    assert result.ran
    # Generous: the machine is shared; a writer queued behind a lock would wait out the vacuum.
    assert commits and max(commits) < 10
    print(f"vacuum {result.seconds:.3f} s; {len(commits)} inserts, slowest {max(commits):.3f} s")


def test_migration_sets_per_table_autovacuum(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        options = dict(
            conn.execute(
                text(
                    "SELECT relname, reloptions FROM pg_class WHERE relname IN "
                    "('journey_node_executions', 'journey_contacts', 'messages')"
                )
            ).all()
        )
    assert "autovacuum_vacuum_scale_factor=0.01" in options["journey_node_executions"]
    assert "fillfactor=85" in options["journey_contacts"]
    assert "autovacuum_vacuum_scale_factor=0.02" in options["messages"]


def test_report_shows_last_vacuum_and_analyze(pg_engine: Engine) -> None:
    assert run_maintenance(
        pg_engine, "messages", "VACUUM", lock_timeout_ms=500, statement_timeout_ms=60_000
    ).ran
    wait_until(
        lambda: table_stats(pg_engine, ["messages"])[0].last_manual_vacuum is not None, timeout=15
    )
    report = collect(pg_engine, {})
    rows = {row["table"]: row for row in report["maintenance"]["rows"]}
    assert set(rows) == set(HOT_TABLES)
    vacuumed = datetime.fromisoformat(rows["messages"]["last_vacuum"])
    assert (datetime.now(UTC) - vacuumed).total_seconds() < 120
    assert rows["messages"]["last_vacuum_by"] == "manual"
    text_form = render_text(report)
    assert "Vacuum and analyze" in text_form and "messages" in text_form


def test_beat_schedules_maintenance_from_its_setting() -> None:
    from envconfig import ConfigError
    from tasks import names
    from worker.app import create_app
    from worker.settings import WorkerSettings

    def worker(interval: str) -> WorkerSettings:
        return WorkerSettings.from_env({"MAINTENANCE_INTERVAL_SECONDS": interval})

    app = create_app(worker("600"))
    entry = app.conf.beat_schedule["maintain-tables"]
    assert entry["task"] == names.MAINTAIN_TABLES
    assert entry["schedule"].total_seconds() == 600
    assert "tasks.maintenance" in app.conf.include
    assert names.MAINTAIN_TABLES in app.tasks
    assert "maintain-tables" not in create_app(worker("0")).conf.beat_schedule
    with pytest.raises(ConfigError, match="MAINTENANCE_INTERVAL_SECONDS"):
        worker("-1")


def test_phase3_migration_upgrades_downgrades_and_reruns(empty_pg_url: str) -> None:
    import importlib

    from sqlalchemy import create_engine

    from db.migrate import current_revision, downgrade, upgrade

    # The revision's own numbers, so a re-chained revision keeps this test valid.
    migration = importlib.import_module("migrations.versions.0013_phase3_ops")
    this, previous = migration.revision, migration.down_revision

    engine = create_engine(empty_pg_url)
    try:

        def reloptions() -> dict[str, Any]:
            with engine.connect() as conn:
                return dict(
                    conn.execute(
                        text(
                            "SELECT relname, reloptions FROM pg_class WHERE relname IN "
                            "('journey_node_executions', 'journey_contacts', 'messages', "
                            "'contact_imports')"
                        )
                    ).all()
                )

        upgrade(engine, this)
        assert set(reloptions()) == {
            "journey_node_executions",
            "journey_contacts",
            "messages",
            "contact_imports",
        }
        downgrade(engine, previous)
        assert current_revision(engine) == previous
        after = reloptions()
        assert "contact_imports" not in after
        assert all(options is None for options in after.values())
        upgrade(engine, this)
        # Re-runnable: a rerun over a half-applied revision (its table already there) succeeds.
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": previous})
        upgrade(engine, this)
        assert current_revision(engine) == this
        assert "fillfactor=85" in reloptions()["journey_contacts"]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_real_worker_runs_maintenance_from_its_message(rig: Any, redis_broker_url: str) -> None:
    from tests.kombu_producer import KombuProducer

    db = rig.db
    without_autovacuum(db)
    tenant = make_tenant(db)
    make_contacts(db, tenant, 1000)
    with db.begin() as conn:
        conn.execute(text("DELETE FROM contacts WHERE phone > '+15550000300'"))
    wait_until(lambda: contact_stats(db).dead_rows >= 600, timeout=15)
    env = rig.env(
        redis_broker_url,
        MAINTENANCE_VACUUM_MIN_DEAD_ROWS="200",
        MAINTENANCE_ANALYZE_MIN_CHANGED_ROWS="100000000",
    )
    worker = rig.start(env)
    with KombuProducer(redis_broker_url) as producer:
        producer.publish("journeys.maintain_tables", {})
    wait_until(lambda: contact_stats(db).last_manual_vacuum is not None, timeout=60)
    wait_until(lambda: "maintenance VACUUM contacts" in worker.log(), timeout=15)
    assert contact_stats(db).dead_rows == 0
    assert worker.proc.poll() is None
