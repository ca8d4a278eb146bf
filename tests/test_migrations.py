"""Migrations against real PostgreSQL (and SQLite): schema, the seed's indexes, the rollback plan,
index verification, the migration lock, refusing a newer database, and the NOTIFY triggers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner, Result
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from db import engine as db_engine
from db.engine import build_engine
from db.indexes import PERFORMANCE_INDEXES
from db.migrate import (
    INVALIDATION_CHANNEL,
    MIGRATION_LOCK_KEY,
    MigrationError,
    current_revision,
    downgrade,
    head_revision,
    is_at_head,
    make_config,
    upgrade,
)
from db.models import Base
from db.settings import DbSettings, parse_database_url
from db.verify import IndexState, inspect_indexes, repair_indexes, verify_indexes
from tests.locks import wait_for_lock_waiter
from tests.threads import threads
from worker.cli import main
from worker.settings import use_settings

SEED_INDEXES = {spec.name for spec in PERFORMANCE_INDEXES}
TABLES = (
    "tenants",
    "contacts",
    "journeys",
    "journey_nodes",
    "journey_contacts",
    "journey_node_executions",
    "conversations",
    "messages",
    "call_logs",
    "task_failures",
)


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def engine_for() -> Iterator[list[Engine]]:
    """Collects engines a test builds, and disposes of them afterwards."""
    engines: list[Engine] = []
    yield engines
    for engine in engines:
        engine.dispose()


def make_engine(url: str, engines: list[Engine]) -> Engine:
    # Built as production builds it, so session settings (lock_timeout=10s, ...) are real.
    engine = build_engine(DbSettings(url=parse_database_url(url), pool_size=1, max_overflow=0))
    engines.append(engine)
    return engine


def index_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'"))
        else:
            rows = conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
            )
        return {row[0] for row in rows}


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def seed_rows(engine: Engine) -> dict[str, Any]:
    """A row or two in every table, written as upstream would: plain SQL, server defaults."""
    ids: dict[str, Any] = {}

    def insert(conn: Connection, sql: str, **params: object) -> Any:
        return conn.execute(text(sql), params).scalar_one()

    with engine.begin() as conn:
        # No id, status or settings given: the server defaults must supply them.
        ids["tenant"] = t = insert(conn, "INSERT INTO tenants (name) VALUES ('Acme') RETURNING id")
        ids["contact"] = c = insert(
            conn,
            "INSERT INTO contacts (tenant_id, phone, attributes) "
            "VALUES (:t, '+15550001', '{\"plan\": \"pro\"}') RETURNING id",
            t=t,
        )
        insert(
            conn,
            "INSERT INTO contacts (tenant_id, email) VALUES (:t, 'b@x.test') RETURNING id",
            t=t,
        )
        ids["journey"] = j = insert(
            conn, "INSERT INTO journeys (tenant_id, name) VALUES (:t, 'Welcome') RETURNING id", t=t
        )
        ids["node_last"] = last = insert(
            conn,
            "INSERT INTO journey_nodes (tenant_id, journey_id, type) "
            "VALUES (:t, :j, 'exit') RETURNING id",
            t=t,
            j=j,
        )
        ids["node"] = n = insert(
            conn,
            "INSERT INTO journey_nodes (tenant_id, journey_id, type, config, next_node_id) "
            "VALUES (:t, :j, 'send_sms', '{\"body\": \"Hi\"}', :nx) RETURNING id",
            t=t,
            j=j,
            nx=last,
        )
        conn.execute(text("UPDATE journeys SET entry_node_id = :n WHERE id = :j"), {"n": n, "j": j})
        ids["journey_contact"] = jc = insert(
            conn,
            "INSERT INTO journey_contacts (tenant_id, journey_id, contact_id, current_node_id) "
            "VALUES (:t, :j, :c, :n) RETURNING id",
            t=t,
            j=j,
            c=c,
            n=n,
        )
        ids["execution"] = e = insert(
            conn,
            "INSERT INTO journey_node_executions (tenant_id, journey_contact_id, node_id, status, "
            "executed_at, step_seq) VALUES (:t, :jc, :n, 'COMPLETED', CURRENT_TIMESTAMP, 0) "
            "RETURNING id",
            t=t,
            jc=jc,
            n=n,
        )
        conv = insert(
            conn,
            "INSERT INTO conversations (tenant_id, contact_id) VALUES (:t, :c) RETURNING id",
            t=t,
            c=c,
        )
        insert(
            conn,
            "INSERT INTO messages (tenant_id, conversation_id, contact_id, "
            "journey_node_execution_id, direction, body) "
            "VALUES (:t, :conv, :c, :e, 'OUTBOUND', 'Hi') RETURNING id",
            t=t,
            conv=conv,
            c=c,
            e=e,
        )
        insert(
            conn,
            "INSERT INTO call_logs (tenant_id, contact_id, status, duration_seconds) "
            "VALUES (:t, :c, 'completed', 42) RETURNING id",
            t=t,
            c=c,
        )
        insert(
            conn,
            "INSERT INTO task_failures (task_name, error) VALUES ('journeys.x', 'boom') RETURNING id",
        )
    return ids


def run_cli(url: str, *args: str) -> Result:
    """`journey-worker ARGS` with DATABASE_URL=url, on a process engine built for this call
    from settings read for this call, as a fresh process would."""
    use_settings(None)
    db_engine.use_engine(None)
    try:
        return CliRunner().invoke(main, list(args), env={"DATABASE_URL": url})
    finally:
        engine = db_engine._engine
        if engine is not None:
            engine.dispose()
        db_engine.use_engine(None)
        use_settings(None)


def pg_connect(url: str) -> psycopg.Connection:
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True
    )


def problems_by_name(engine: Engine) -> dict[str, IndexState]:
    return {p.name: p.state for p in verify_indexes(engine)}


# -- schema and the rollback plan ----------------------------------------------------------------


def test_upgrade_downgrade_0001_removes_exactly_the_seed_indexes_and_keeps_rows(
    empty_pg_url: str, engine_for: list[Engine]
) -> None:
    engine = make_engine(empty_pg_url, engine_for)
    assert current_revision(engine) is None

    upgrade(engine)
    assert current_revision(engine) == head_revision() and is_at_head(engine)
    ids = seed_rows(engine)
    with engine.connect() as conn:
        tenant = conn.execute(
            text("SELECT status, settings, created_at FROM tenants WHERE id = :t"),
            {"t": ids["tenant"]},
        ).one()
    assert tenant.status == "ACTIVE" and tenant.settings == {} and tenant.created_at is not None
    counts = row_counts(engine)
    assert all(counts[t] >= 1 for t in TABLES), counts
    assert verify_indexes(engine) == []

    at_head = index_names(engine)
    downgrade(engine, "0002")  # later revisions add their own indexes; 0002 is the seed's
    before = index_names(engine)
    downgrade(engine, "0001")
    after = index_names(engine)
    assert current_revision(engine) == "0001"
    assert before - after == SEED_INDEXES
    assert after <= before
    assert row_counts(engine) == counts
    assert {p.state for p in verify_indexes(engine)} == {IndexState.MISSING}

    upgrade(engine, "0002")
    assert index_names(engine) == before
    upgrade(engine, "head")
    assert index_names(engine) == at_head
    assert verify_indexes(engine) == []
    assert row_counts(engine) == counts

    # Everything goes with base, including the trigger function.
    downgrade(engine, "base")
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        functions = conn.execute(
            text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'journey_worker%'")
        ).scalar_one()
        assert set(tables) == {"alembic_version"}
        assert functions == 0


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_migrated_schema_matches_the_models(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, engine_for: list[Engine]
) -> None:
    """Autogenerate finds nothing to change: 0001 is exactly db/models.py (seed indexes aside)."""
    if backend == "postgresql":
        url = request.getfixturevalue("empty_pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'schema.db'}"
    engine = make_engine(url, engine_for)
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = [
            d
            for d in compare_metadata(context, Base.metadata)
            if not (d[0] == "remove_index" and d[1].name in SEED_INDEXES)
        ]
    assert diff == []


def test_sqlite_upgrade_downgrade_upgrade(tmp_path: Path, engine_for: list[Engine]) -> None:
    url = f"sqlite:///{tmp_path / 'journey.db'}"
    engine = make_engine(url, engine_for)
    upgrade(url)
    assert current_revision(engine) == head_revision()
    ids = seed_rows(engine)
    assert verify_indexes(engine) == []
    counts = row_counts(engine)

    at_head = index_names(engine)
    downgrade(engine, "0002")
    before = index_names(engine)
    downgrade(engine, "0001")
    assert before - index_names(engine) == SEED_INDEXES
    assert row_counts(engine) == counts

    upgrade(engine)
    assert index_names(engine) == at_head
    assert verify_indexes(engine) == []
    with engine.connect() as conn:
        # The SQLite uuid default yields the 32 hex digits SQLAlchemy's Uuid reads back.
        assert conn.execute(text("SELECT count(*) FROM tenants")).scalar_one() == 1
        # (text() hands back the raw column: a hex string here, a UUID on PostgreSQL.)
        assert len(ids["tenant"]) == 32 and int(ids["tenant"], 16) >= 0
    downgrade(engine, "base")
    with engine.connect() as conn:
        left = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars()
        assert set(left) == {"alembic_version"}


# -- index verification --------------------------------------------------------------------------


def test_a_dropped_index_is_missing_and_the_cli_exits_1_naming_it(
    pg_url: str, engine_for: list[Engine]
) -> None:
    engine = make_engine(pg_url, engine_for)
    clean = run_cli(pg_url, "db", "verify-indexes")
    assert clean.exit_code == 0, clean.output
    assert clean.stdout.count("\nok ") + clean.stdout.startswith("ok ") == len(SEED_INDEXES)

    with engine.begin() as conn:
        conn.execute(text("DROP INDEX idx_messages_conversation_created_at"))
    assert problems_by_name(engine) == {"idx_messages_conversation_created_at": IndexState.MISSING}

    result = run_cli(pg_url, "db", "verify-indexes")
    assert result.exit_code == 1
    assert "MISSING  idx_messages_conversation_created_at" in result.stdout
    assert "idx_messages_conversation_created_at" in result.stderr
    assert sum(line.startswith("ok ") for line in result.stdout.splitlines()) == 11

    repaired = run_cli(pg_url, "db", "verify-indexes", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert verify_indexes(engine) == []


def test_an_invalid_index_is_reported_and_rerunning_0002_rebuilds_it(
    pg_url: str, engine_for: list[Engine]
) -> None:
    engine = make_engine(pg_url, engine_for)
    name = "idx_journey_contacts_active"
    with engine.begin() as conn:
        # What a failed CREATE INDEX CONCURRENTLY leaves behind (we connect as superuser).
        old_oid = conn.execute(text(f"SELECT '{name}'::regclass::oid")).scalar_one()
        conn.execute(text(f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = {old_oid}"))
    assert problems_by_name(engine) == {name: IndexState.INVALID}
    result = run_cli(pg_url, "db", "verify-indexes")
    assert result.exit_code == 1
    assert f"INVALID  {name}" in result.stdout

    # Run revision 0002 again: it drops the INVALID leftover and builds the index anew.
    with engine.connect() as conn:
        command.stamp(make_config(conn), "0001")
    upgrade(engine, "0002")
    assert current_revision(engine) == "0002"
    assert verify_indexes(engine) == []
    with engine.connect() as conn:
        new_oid = conn.execute(text(f"SELECT '{name}'::regclass::oid")).scalar_one()
    assert new_oid != old_oid
    upgrade(engine)  # and 0003 reruns cleanly too
    assert is_at_head(engine)


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        # column order swapped
        (
            "idx_journey_node_executions_node_contact_tenant",
            "journey_node_executions (journey_contact_id, node_id, tenant_id)",
        ),
        # DESC missing
        (
            "idx_call_logs_tenant_created_status",
            "call_logs (tenant_id, created_at, status)",
        ),
        # predicate missing
        ("idx_journey_contacts_active", "journey_contacts (journey_id, current_node_id)"),
        # another predicate
        (
            "idx_journey_contacts_active",
            "journey_contacts (journey_id, current_node_id) WHERE status = 'WAITING'",
        ),
        # unique where the spec is not
        ("idx_contacts_created_at", "contacts (created_at DESC)"),
    ],
)
def test_a_differently_defined_index_differs(
    name: str, wrong: str, pg_url: str, engine_for: list[Engine]
) -> None:
    engine = make_engine(pg_url, engine_for)
    unique = "UNIQUE " if name == "idx_contacts_created_at" else ""
    with engine.begin() as conn:
        conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(text(f"CREATE {unique}INDEX {name} ON {wrong}"))
    problems = verify_indexes(engine)
    assert [(p.name, p.state) for p in problems] == [(name, IndexState.DIFFERS)]
    assert problems[0].expected != problems[0].actual

    result = run_cli(pg_url, "db", "verify-indexes")
    assert result.exit_code == 1
    assert f"DIFFERS  {name}: expected CREATE INDEX {name}" in result.stdout

    assert repair_indexes(engine) == []


def test_ok_lines_show_what_postgresql_holds(pg_url: str, engine_for: list[Engine]) -> None:
    engine = make_engine(pg_url, engine_for)
    statuses = {s.name: s for s in inspect_indexes(engine)}
    assert all(s.ok for s in statuses.values())
    assert statuses["idx_journey_node_executions_executed_at"].actual == (
        "CREATE INDEX idx_journey_node_executions_executed_at ON public.journey_node_executions "
        "USING btree (executed_at DESC) WHERE (executed_at IS NOT NULL)"
    )


# -- a database newer than the code --------------------------------------------------------------


def test_a_database_at_an_unknown_revision_is_refused(
    pg_url: str, engine_for: list[Engine]
) -> None:
    engine = make_engine(pg_url, engine_for)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))

    with pytest.raises(MigrationError, match=r"revision 0999, which this code does not know"):
        upgrade(engine)
    with pytest.raises(MigrationError, match="newer than this code"):
        downgrade(engine, "0002")
    assert current_revision(engine) == "0999"
    assert not is_at_head(engine)
    assert verify_indexes(engine) == []  # nothing was touched

    for args in (("db", "upgrade"), ("db", "current"), ("db", "downgrade", "0001")):
        result = run_cli(pg_url, *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("\n") == 1
        assert "0999" in result.stderr and "newer than this code" in result.stderr
        assert "Traceback" not in result.output


@pytest.mark.parametrize("repair", [False, True], ids=["verify", "repair"])
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_verify_indexes_on_a_database_never_migrated_says_run_upgrade(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, repair: bool
) -> None:
    url = (
        request.getfixturevalue("empty_pg_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'never-migrated.db'}"
    )
    result = run_cli(url, "db", "verify-indexes", *(["--repair"] if repair else []))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == (
        "journey-worker: empty database (never migrated): run `journey-worker db upgrade`, "
        f"which builds the indexes too (head is {head_revision()})"
    )
    assert "--repair" not in result.output and "cannot connect" not in result.output


def test_cli_upgrade_and_current(empty_pg_url: str) -> None:
    assert run_cli(empty_pg_url, "db", "current").stdout.startswith("none")
    result = run_cli(empty_pg_url, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "Running upgrade 0001 -> 0002" in result.stderr
    assert result.stdout.strip() == f"database at revision {head_revision()}"
    assert run_cli(empty_pg_url, "db", "current").stdout.strip() == f"{head_revision()} (head)"
    result = run_cli(empty_pg_url, "db", "downgrade", "0002")
    assert result.exit_code == 0, result.output
    assert "behind head" in run_cli(empty_pg_url, "db", "current").stdout


# -- the migration lock --------------------------------------------------------------------------


def test_upgrade_waits_for_the_migration_lock_and_gives_up_on_its_timeout(
    empty_pg_url: str, engine_for: list[Engine]
) -> None:
    """While another session holds the lock, upgrade waits lock_wait_seconds and then fails
    without having run anything; the CLI turns that into one line and exit 2."""
    engine = make_engine(empty_pg_url, engine_for)
    with pg_connect(empty_pg_url) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))

        started = time.monotonic()
        with pytest.raises(
            MigrationError, match=r"another migration is running \(lock held by pid"
        ):
            upgrade(engine, lock_wait_seconds=0.5)
        waited = time.monotonic() - started
        assert 0.4 <= waited < 5, waited

        with pytest.raises(MigrationError, match="another migration is running"):
            upgrade(engine, lock_wait_seconds=0)  # try once, do not wait

        result = run_cli(empty_pg_url, "db", "upgrade", "--lock-wait", "0.2")
        assert result.exit_code == 2
        assert result.stderr.startswith("journey-worker: another migration is running")
        assert result.stderr.count("\n") == 1

        assert current_revision(engine) is None
        with engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass('tenants')")).scalar() is None
            # The failed attempt put the engine's session settings back.
            assert conn.execute(text("SHOW lock_timeout")).scalar_one() == "10s"
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "1min"


def test_a_second_upgrade_runs_after_the_first_releases_the_lock(
    empty_pg_url: str, engine_for: list[Engine]
) -> None:
    engine = make_engine(empty_pg_url, engine_for)
    with pg_connect(empty_pg_url) as holder, threads() as pool:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))

        def release_once_the_upgrade_waits() -> None:
            # The interleaving, forced: the upgrade is blocked on the lock, not running alongside.
            wait_for_lock_waiter(engine)
            revisions = holder.execute("SELECT to_regclass('alembic_version')").fetchone()
            assert revisions == (None,), "the upgrade ran without the lock"
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))

        pool.start(release_once_the_upgrade_waits)
        upgrade(engine, lock_wait_seconds=20)
    assert is_at_head(engine)

    with engine.connect() as conn:
        held = conn.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        ).scalar_one()
        settings = conn.execute(
            text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
        ).one()
    assert held == 0  # released after the run
    assert tuple(settings) == ("10s", "1min")  # and the pooled connection's settings restored


def test_ddl_behind_live_traffic_gives_up_on_lock_timeout(
    pg_url: str, engine_for: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration's DDL waits lock_timeout for its table lock, not forever, and says so."""
    import db.migrate

    monkeypatch.setattr(db.migrate, "MIGRATION_LOCK_TIMEOUT", "300ms")  # 4s in production
    engine = make_engine(pg_url, engine_for)
    # Later revisions' downgrades lock tenants too (foreign keys to it): start at 0003.
    downgrade(engine, "0003")
    with pg_connect(pg_url) as traffic, traffic.transaction():
        # An open write transaction on tenants: DROP TRIGGER (0003's downgrade) must wait for it.
        traffic.execute("UPDATE tenants SET name = name")
        started = time.monotonic()
        with pytest.raises(MigrationError, match=r"downgrade to 0002 failed: .*lock timeout"):
            downgrade(engine, "0002")
        assert time.monotonic() - started < 5
    # The failed revision rolled back entirely.
    assert current_revision(engine) == "0003"
    downgrade(engine, "0002")  # and succeeds once the traffic has committed
    assert current_revision(engine) == "0002"


# -- invalidation NOTIFY -------------------------------------------------------------------------


def drain(listener: psycopg.Connection, seconds: float) -> list[dict[str, str | None]]:
    """Notifications that arrive within `seconds`, or the first one plus any following it."""
    first = list(listener.notifies(timeout=seconds, stop_after=1))
    rest = list(listener.notifies(timeout=0.2)) if first else []
    return [json.loads(n.payload) for n in first + rest]


def test_changes_notify_after_commit_only(pg_url: str, engine_for: list[Engine]) -> None:
    engine = make_engine(pg_url, engine_for)
    ids = seed_rows(engine)
    tenant, journey = str(ids["tenant"]), str(ids["journey"])

    with pg_connect(pg_url) as listener, pg_connect(pg_url) as writer:
        listener.execute(f"LISTEN {INVALIDATION_CHANNEL}")

        with writer.transaction():
            writer.execute(
                'UPDATE journey_nodes SET config = \'{"body": "Hello"}\' WHERE journey_id = %s',
                (ids["journey"],),
            )
            assert drain(listener, 0.3) == []  # not before commit
        # Two node rows of one journey changed: identical payloads collapse into one.
        assert drain(listener, 2) == [
            {"kind": "journey", "tenant_id": tenant, "journey_id": journey}
        ]

        with writer.transaction():
            writer.execute(
                "UPDATE tenants SET status = 'SUSPENDED' WHERE id = %s", (ids["tenant"],)
            )
        assert drain(listener, 2) == [{"kind": "tenant", "tenant_id": tenant, "journey_id": None}]

        with writer.transaction():
            writer.execute("UPDATE journeys SET name = 'Renamed' WHERE id = %s", (ids["journey"],))
        assert drain(listener, 2) == [
            {"kind": "journey", "tenant_id": tenant, "journey_id": journey}
        ]

        # A rolled-back change notifies nobody.
        with pytest.raises(RuntimeError), writer.transaction():
            writer.execute("DELETE FROM journey_nodes WHERE id = %s", (ids["node_last"],))
            raise RuntimeError("roll back")
        assert drain(listener, 0.3) == []

        # A new node of another journey: its own journey is named.
        with writer.transaction():
            other = writer.execute(
                "INSERT INTO journeys (tenant_id, name) VALUES (%s, 'Other') RETURNING id",
                (ids["tenant"],),
            ).fetchone()
            assert other is not None
            writer.execute(
                "INSERT INTO journey_nodes (tenant_id, journey_id, type) VALUES (%s, %s, 'exit')",
                (ids["tenant"], other[0]),
            )
        assert drain(listener, 2) == [
            {"kind": "journey", "tenant_id": tenant, "journey_id": str(other[0])}
        ]
