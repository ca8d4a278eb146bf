"""The engine behind a real PgBouncer in transaction pooling mode (DB_PGBOUNCER=true).

Transaction pooling hands each transaction (each autocommit statement) whatever server
connection is free, so session state does not survive from one statement to the next. The
webhook step's exclusive hold is therefore a transaction-scoped advisory lock taken inside the
transaction that also re-checks, calls and writes: it can never be left behind on a pooled
server connection, which a session lock and its separate unlock could."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from db import engine as db_engine
from db.settings import DbSettings, parse_database_url
from tasks.http import HttpResponse
from tests.engine_harness import row_counts, run_batch, run_step
from tests.factories import make_contacts, make_journey, make_journey_contact, make_tenant
from tests.locks import advisory_locks, wait_for_lock_waiter
from tests.pgbouncer import pgbouncer
from tests.threads import run_in_threads, threads


@pytest.fixture
def bounced(pg_url: str) -> Iterator[tuple[Engine, Engine]]:
    """(the process engine through PgBouncer, a direct engine to the same database)."""
    with pgbouncer(pg_url, pool_size=2) as url:
        engine = db_engine.build_engine(
            DbSettings(url=parse_database_url(url), pgbouncer=True, pool_size=16, max_overflow=16)
        )
        direct = create_engine(pg_url, pool_size=2)
        db_engine.use_engine(engine)
        try:
            yield engine, direct
        finally:
            db_engine.use_engine(None)
            engine.dispose()
            direct.dispose()


WEBHOOK = [("hook", "webhook", {"url": "https://hooks.example.test/x"}, None)]


def test_webhook_steps_through_transaction_pooling_leave_no_lock_behind(bounced) -> None:
    _engine, direct = bounced
    tenant = make_tenant(direct)
    journey = make_journey(direct, tenant, WEBHOOK)
    jcs = [make_journey_contact(direct, journey, c) for c in make_contacts(direct, tenant, 12)]
    calls: list[str] = []
    lock = threading.Lock()

    def http(url, payload, *, method, timeout, idempotency_key):
        with lock:
            calls.append(idempotency_key)
        return HttpResponse(200, "{}")

    # Twelve webhook steps at once over two server connections: their transactions interleave
    # on whatever connection PgBouncer hands them.
    run_in_threads(
        *(
            functools.partial(run_step, tenant, jc, journey.nodes["hook"], 0, http=http)
            for jc in jcs
        )
    )
    assert sorted(calls) == sorted(f"{jc}:0" for jc in jcs)
    assert {row_counts(direct, jc)["status"] for jc in jcs} == {"COMPLETED"}
    assert advisory_locks(direct) == 0


def test_a_duplicate_behind_transaction_pooling_waits_and_never_calls(bounced) -> None:
    _engine, direct = bounced
    tenant = make_tenant(direct)
    journey = make_journey(direct, tenant, WEBHOOK)
    jc = make_journey_contact(direct, journey, make_contacts(direct, tenant, 1)[0])
    in_call, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def held_http(url, payload, *, method, timeout, idempotency_key):
        calls.append(idempotency_key)
        in_call.set()
        assert release.wait(20), "the test never released the webhook"
        return HttpResponse(200, "{}")

    def release_once_the_duplicate_waits() -> None:
        wait_for_lock_waiter(direct)
        release.set()

    with threads() as pool:
        first = pool.start(run_step, tenant, jc, journey.nodes["hook"], 0, http=held_http)
        assert in_call.wait(20)
        # The first holds the lock inside its transaction, on one server connection: the
        # duplicate waits on another (seen waiting before the first goes on), then finds the
        # step taken.
        assert advisory_locks(direct) == 1
        pool.start(release_once_the_duplicate_waits)
        duplicate = run_step(tenant, jc, journey.nodes["hook"], 0, http=held_http)
    assert (first.result.outcome, duplicate.outcome) == ("executed", "duplicate")
    assert calls == [f"{jc}:0"]
    assert advisory_locks(direct) == 0


def test_a_batch_is_its_two_statements_through_transaction_pooling(bounced) -> None:
    _engine, direct = bounced
    tenant = make_tenant(direct)
    journey = make_journey(
        direct,
        tenant,
        [
            ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "tag"),
            ("tag", "update_contact", {"set": {"seen": True}}, None),
        ],
    )
    jcs = [make_journey_contact(direct, journey, c) for c in make_contacts(direct, tenant, 50)]
    # No server-side prepared statements behind PgBouncer: run the same shape more than
    # psycopg's prepare threshold (5) times.
    for _ in range(7):
        run_batch(tenant, journey.nodes["hello"], [(jc, 0) for jc in jcs])
    outcome = run_batch(tenant, journey.nodes["tag"], [(jc, 1) for jc in jcs])
    assert outcome.counts() == {"executed": 50}
    assert {row_counts(direct, jc)["status"] for jc in jcs} == {"COMPLETED"}
    assert {row_counts(direct, jc)["messages"] for jc in jcs} == {1}
