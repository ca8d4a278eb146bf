"""The invalidation listener on real PostgreSQL (migration 0003's triggers) and real Redis.

Each test runs a Listener in a thread against its own database and key prefix, changes rows in
another connection and commits, and polls the cache until the entry is gone. Connection loss is
real too: the listener's backend is terminated with pg_terminate_backend.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

import cache as cache_module
from cache import CacheSettings, JourneyCache
from db.migrate import INVALIDATION_CHANNEL
from db.settings import parse_database_url
from tests.factories import JourneyFixture, make_journey, make_tenant
from tests.threads import run_in_threads, threads
from tests.worker_process import ROOT, wait_until
from worker.listen import (
    APPLICATION_NAME,
    Invalidation,
    Listener,
    conninfo_from_url,
    parse_payload,
)

# The console script of this venv, as a Procfile line runs it.
JOURNEY_WORKER = str(Path(sys.executable).parent / "journey-worker")
WITHIN = 5.0  # seconds a committed change may take to reach the cache (it takes milliseconds)

NODES = [
    ("hello", "send_sms", {"body": "Hi"}, "bye"),
    ("bye", "exit", {}, None),
]


# Fixtures and helpers.


@pytest.fixture
def jc(redis_url: str, cache_prefix: str) -> Iterator[JourneyCache]:
    """The process cache on this test's prefix; its keys are deleted afterwards."""
    cache = cache_module.build_cache(CacheSettings(url=redis_url, key_prefix=cache_prefix))
    cache_module.use_cache(cache)
    yield cache
    cache_module.use_cache(None)
    keys = list(cache.redis.scan_iter(f"{cache_prefix}:*", count=1000))
    if keys:
        cache.redis.delete(*keys)
    cache.redis.close()


@pytest.fixture
def journey(pg_engine: Engine) -> JourneyFixture:
    tenant_id = make_tenant(pg_engine)
    return make_journey(pg_engine, tenant_id, NODES)


def conninfo(pg_url: str) -> str:
    return conninfo_from_url(parse_database_url(pg_url))


@contextmanager
def running(listener: Listener) -> Iterator[Listener]:
    stop = threading.Event()
    # Whatever the listener raises fails the test; so does a listener that does not stop.
    with threads(timeout=10) as pool:
        pool.start(listener.run, stop)
        try:
            assert listener.listening.wait(10), "the listener did not start listening"
            yield listener
        finally:
            stop.set()


def fast_listener(pg_url: str, jc: JourneyCache, **options: Any) -> Listener:
    options.setdefault("poll_seconds", 0.1)
    options.setdefault("backoff_initial", 0.05)
    options.setdefault("backoff_max", 0.5)
    return Listener(conninfo(pg_url), cache=jc, **options)


def fill_nodes(jc: JourneyCache, fx: JourneyFixture) -> None:
    """Cache every node of the journey, the way the engine does: read for a token, then fill."""
    tenant, journey = str(fx.tenant_id), str(fx.journey_id)
    first = str(next(iter(fx.nodes.values())))
    seen = jc.read(tenant, journey, first)
    nodes = {str(node_id): {"name": name} for name, node_id in fx.nodes.items()}
    assert jc.fill_nodes(tenant, journey, nodes, seen.journey_token)
    assert node_cached(jc, fx, "hello")


def fill_tenant(jc: JourneyCache, fx: JourneyFixture) -> None:
    seen = jc.read(str(fx.tenant_id), str(fx.journey_id), str(fx.nodes["hello"]))
    assert jc.fill_tenant(str(fx.tenant_id), {"status": "ACTIVE"}, seen.tenant_token)
    assert tenant_cached(jc, fx)


def node_cached(jc: JourneyCache, fx: JourneyFixture, name: str) -> bool:
    read = jc.read(str(fx.tenant_id), str(fx.journey_id), str(fx.nodes[name]))
    assert read.available
    return read.node is not None


def tenant_cached(jc: JourneyCache, fx: JourneyFixture) -> bool:
    read = jc.read(str(fx.tenant_id), str(fx.journey_id), str(fx.nodes["hello"]))
    assert read.available
    return read.tenant is not None


def execute(engine: Engine, sql: str, **params: Any) -> None:
    """One statement in its own committed transaction, as upstream would write."""
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def edit_node(engine: Engine, fx: JourneyFixture, name: str = "hello") -> None:
    execute(
        engine,
        'UPDATE journey_nodes SET config = \'{"body": "Hello again"}\' WHERE id = :id',
        id=fx.nodes[name],
    )


def eventually(predicate: Callable[[], bool], timeout: float = WITHIN) -> None:
    wait_until(predicate, timeout=timeout, interval=0.02)


def terminate_listener(engine: Engine) -> int:
    with engine.begin() as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :app AND datname = current_database()"
                ),
                {"app": APPLICATION_NAME},
            ).all()
        )


# Payloads (no services needed).


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            '{"kind": "tenant", "tenant_id": "t1", "journey_id": null}',
            Invalidation("tenant", "t1", None),
        ),
        (
            '{"kind": "journey", "tenant_id": "t1", "journey_id": "j1"}',
            Invalidation("journey", "t1", "j1"),
        ),
    ],
)
def test_payloads_of_the_triggers_parse(payload: str, expected: Invalidation) -> None:
    assert parse_payload(payload) == expected


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"kind": "journey", "tenant_id": "t1"}', "journey_id"),
        ('{"kind": "journey", "tenant_id": "t1", "journey_id": 7}', "journey_id"),
        ('{"kind": "tenant"}', "tenant_id"),
        ('{"kind": "tenant", "tenant_id": "{t1}"}', "tenant_id"),
        ('{"kind": "contact", "tenant_id": "t1"}', "unknown kind"),
    ],
)
def test_unusable_payloads_say_why(payload: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_payload(payload)


def test_backoff_doubles_and_is_capped() -> None:
    listener = Listener("", backoff_initial=0.5, backoff_max=10.0)
    assert [listener.backoff(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert listener.backoff(10_000) == 10


def test_conninfo_drops_the_driver_and_keeps_options() -> None:
    url = parse_database_url("postgresql+psycopg://u:p%40ss w@db.example:6543/jw?sslmode=require")
    info = psycopg.conninfo.conninfo_to_dict(conninfo_from_url(url))
    assert info["host"] == "db.example"
    assert info["port"] == "6543"
    assert info["dbname"] == "jw"
    assert info["user"] == "u"
    assert info["password"] == "p@ss w"
    assert info["sslmode"] == "require"
    assert info["application_name"] == APPLICATION_NAME
    assert info["keepalives"] == "1"


# Against PostgreSQL and Redis.


def test_a_committed_node_change_drops_the_journeys_nodes(
    pg_url: str, pg_engine: Engine, jc: JourneyCache, journey: JourneyFixture
) -> None:
    with running(fast_listener(pg_url, jc)) as listener:
        fill_nodes(jc, journey)
        fill_tenant(jc, journey)
        edit_node(pg_engine, journey, "bye")
        eventually(lambda: not node_cached(jc, journey, "hello"))
        assert listener.stats.journeys >= 1
        assert tenant_cached(jc, journey), "a node change must not drop the tenant"


def test_a_rolled_back_change_invalidates_nothing(
    pg_url: str, pg_engine: Engine, jc: JourneyCache, journey: JourneyFixture
) -> None:
    with running(fast_listener(pg_url, jc)) as listener:
        fill_nodes(jc, journey)
        with pg_engine.connect() as conn:
            conn.execute(
                text("UPDATE journey_nodes SET config = '{}' WHERE id = :id"),
                {"id": journey.nodes["hello"]},
            )
            conn.rollback()
        # A marker notification after the rollback: once it is applied, anything before it was.
        execute(pg_engine, "SELECT pg_notify(:c, 'marker')", c=INVALIDATION_CHANNEL)
        eventually(lambda: listener.stats.ignored == 1)
        assert listener.stats.journeys == 0
        assert node_cached(jc, journey, "hello")


def test_a_committed_journey_change_drops_its_nodes(
    pg_url: str, pg_engine: Engine, jc: JourneyCache, journey: JourneyFixture
) -> None:
    with running(fast_listener(pg_url, jc)):
        fill_nodes(jc, journey)
        execute(
            pg_engine, "UPDATE journeys SET status = 'PAUSED' WHERE id = :id", id=journey.journey_id
        )
        eventually(lambda: not node_cached(jc, journey, "hello"))


def test_a_committed_tenant_change_drops_the_tenant(
    pg_url: str, pg_engine: Engine, jc: JourneyCache, journey: JourneyFixture
) -> None:
    with running(fast_listener(pg_url, jc)) as listener:
        fill_nodes(jc, journey)
        fill_tenant(jc, journey)
        execute(
            pg_engine,
            "UPDATE tenants SET status = 'SUSPENDED' WHERE id = :id",
            id=journey.tenant_id,
        )
        eventually(lambda: not tenant_cached(jc, journey))
        assert listener.stats.tenants == 1
        assert node_cached(jc, journey, "hello"), "a tenant change must not drop nodes"


def test_a_malformed_payload_is_ignored_and_the_listener_keeps_going(
    pg_url: str,
    pg_engine: Engine,
    jc: JourneyCache,
    journey: JourneyFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running(fast_listener(pg_url, jc)) as listener:
        fill_nodes(jc, journey)
        for payload in ("not json", '{"kind": "journey"}', "[]"):
            execute(pg_engine, "SELECT pg_notify(:c, :p)", c=INVALIDATION_CHANNEL, p=payload)
        eventually(lambda: listener.stats.ignored == 3)
        assert "ignoring notification" in caplog.text
        assert node_cached(jc, journey, "hello")

        edit_node(pg_engine, journey)
        eventually(lambda: not node_cached(jc, journey, "hello"))
        assert listener.connections == 1, "a bad payload must not cost a reconnect"


def test_after_its_connection_is_killed_it_reconnects_and_still_invalidates(
    pg_url: str, pg_engine: Engine, jc: JourneyCache, journey: JourneyFixture
) -> None:
    with running(fast_listener(pg_url, jc)) as listener:
        first_pid = listener.backend_pid
        assert terminate_listener(pg_engine) == 1
        eventually(lambda: listener.connections == 2 and listener.listening.is_set())
        assert listener.backend_pid != first_pid

        fill_nodes(jc, journey)
        edit_node(pg_engine, journey)
        eventually(lambda: not node_cached(jc, journey, "hello"))


def test_changes_made_while_disconnected_are_invalidated_on_reconnect(
    pg_url: str, pg_engine: Engine, jc: JourneyCache, journey: JourneyFixture
) -> None:
    """NOTIFY is not durable: what changed while nobody listened is swept after reconnecting."""
    gate = threading.Event()
    gate.set()

    def connect(info: str) -> psycopg.Connection[Any]:
        assert gate.wait(10)
        return psycopg.connect(info, autocommit=True)

    with running(fast_listener(pg_url, jc, connect=connect)) as listener:
        fill_nodes(jc, journey)
        fill_tenant(jc, journey)
        gate.clear()  # the next connect waits: a database that is away
        terminate_listener(pg_engine)
        eventually(lambda: not listener.listening.is_set())

        edit_node(pg_engine, journey)  # nobody listens: this notification is lost
        execute(
            pg_engine, "UPDATE tenants SET name = 'Renamed' WHERE id = :id", id=journey.tenant_id
        )
        time.sleep(0.3)
        assert node_cached(jc, journey, "hello"), "nothing can have invalidated it yet"

        gate.set()
        eventually(lambda: listener.connections == 2 and listener.listening.is_set())
        assert not node_cached(jc, journey, "hello")
        assert not tenant_cached(jc, journey)
        assert listener.stats.resyncs == 2


class RecordingStop(threading.Event):
    """The listener's stop event, whose waits (its backoff) return at once and are recorded;
    set after `waits` of them, so the test runs exactly that many attempts, on no clock."""

    def __init__(self, waits: int) -> None:
        super().__init__()
        self.waits = waits
        self.delays: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.delays.append(timeout if timeout is not None else -1.0)
        if len(self.delays) >= self.waits:
            self.set()
        return self.is_set()


def test_it_keeps_retrying_while_the_database_is_unreachable(jc: JourneyCache) -> None:
    attempts = 0

    def refuse(info: str) -> psycopg.Connection[Any]:
        nonlocal attempts
        attempts += 1
        raise psycopg.OperationalError("connection refused (simulated)")

    listener = Listener("", cache=jc, connect=refuse, backoff_initial=0.05, backoff_max=0.2)
    stop = RecordingStop(waits=6)
    run_in_threads(lambda: listener.run(stop), timeout=10)
    assert attempts == 6
    assert stop.delays == [0.05, 0.1, 0.2, 0.2, 0.2, 0.2]  # doubling from 0.05, capped at 0.2


class FlakyCache:
    """Delegates to a real cache, but the first `failures` invalidations report a Redis failure."""

    def __init__(self, real: JourneyCache, failures: int) -> None:
        self.real = real
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def invalidate_journey(self, tenant_id: str, journey_id: str) -> bool:
        if self.failures > 0:
            self.failures -= 1
            return False
        return self.real.invalidate_journey(tenant_id, journey_id)


def test_a_lost_invalidation_is_made_up_by_a_later_sweep(
    pg_url: str, pg_engine: Engine, jc: JourneyCache, journey: JourneyFixture
) -> None:
    flaky = FlakyCache(jc, failures=0)
    listener = fast_listener(pg_url, flaky)  # type: ignore[arg-type]
    with running(listener):
        fill_nodes(jc, journey)
        flaky.failures = 1  # Redis "fails" for the notification's invalidation
        edit_node(pg_engine, journey)
        eventually(lambda: listener.stats.failed == 1)
        # The sweep retries after the backoff and drops the entry the notification could not.
        eventually(lambda: not node_cached(jc, journey, "hello"))
        assert listener.stats.resyncs >= 2


# The command, as a Procfile runs it.


def test_the_listen_command_invalidates_and_stops_cleanly_on_sigterm(
    pg_url: str,
    pg_engine: Engine,
    jc: JourneyCache,
    journey: JourneyFixture,
    cache_prefix: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "REDIS_"))
    }
    env.update(
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        CACHE_KEY_PREFIX=cache_prefix,
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "listen.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [JOURNEY_WORKER, "listen", "--log-level", "DEBUG"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(lambda: "listening on channel" in log_path.read_text(), timeout=30)
        eventually(lambda: "invalidated all entries" in log_path.read_text())
        fill_nodes(jc, journey)
        edit_node(pg_engine, journey)
        eventually(lambda: not node_cached(jc, journey, "hello"))
        eventually(lambda: f"invalidated journey {journey.journey_id}" in log_path.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    output = log_path.read_text()
    assert code == 0, output
    assert "received SIGTERM, stopping" in output
    assert "invalidation listener stopped" in output
    assert "Traceback" not in output


def test_the_listen_command_idles_without_redis(pg_url: str, tmp_path: Path) -> None:
    """With the in-process cache there is nothing to invalidate for others: it says so, stays up
    (a Procfile runner stops everything when one process exits) and stops on SIGTERM."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "REDIS_"))
    }
    env.update(DATABASE_URL=pg_url, PYTHONUNBUFFERED="1")
    log_path = tmp_path / "listen.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [JOURNEY_WORKER, "listen"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        eventually(lambda: "REDIS_URL is not set" in log_path.read_text(), timeout=30)
        time.sleep(1.5)
        assert proc.poll() is None, log_path.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, log_path.read_text()
