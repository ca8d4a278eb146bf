"""`journey-worker health` and `journey-worker report` through click's CliRunner, on real services.

The settings, the engine and the cache are process-global: each invocation starts from
use_settings(None), use_engine(None) and use_cache(None), so the command reads the environment the
test set and builds both from it, as a fresh process does in production.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from kombu import Connection, Exchange, Queue
from sqlalchemy import Engine, text

import cache as cache_module
from cache import CacheSettings
from db import engine as db_engine
from db.indexes import PERFORMANCE_INDEXES
from tests.factories import make_contacts, make_journey, make_journey_contact, make_tenant
from tests.worker_process import broker_namespace
from worker.cli import main
from worker.report import SECTIONS
from worker.settings import use_settings

CHECKS = ("database", "migrations", "indexes", "cache", "broker")


@pytest.fixture
def redis_broker() -> Iterator[str]:
    with broker_namespace("redis") as url:
        yield url


@pytest.fixture
def env(
    pg_url: str,
    redis_url: str,
    cache_prefix: str,
    redis_broker: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    values = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_broker,
        "CACHE_KEY_PREFIX": cache_prefix,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield values
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{cache_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Run the CLI as a fresh process would: no settings, engine or cache, all from the env."""
    use_settings(None)
    db_engine.use_engine(None)
    cache_module.use_cache(None)
    try:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        engine = db_engine._engine
        db_engine.use_engine(None)
        if engine is not None:
            engine.dispose()
        cache_module.use_cache(None)
        use_settings(None)


def lines(result: Result) -> dict[str, str]:
    """Check name -> its line."""
    found: dict[str, str] = {}
    for line in result.output.splitlines():
        status, _, rest = line.partition(" ")
        name = rest.strip().split()[0].rstrip(":")
        assert status in ("ok", "FAIL"), line
        found[name] = line
    return found


# health


def test_health_all_ok(env: dict[str, str]) -> None:
    result = invoke("health")
    assert result.exit_code == 0, result.output
    found = lines(result)
    assert list(found) == list(CHECKS)
    assert all(line.startswith("ok   ") for line in found.values()), result.output
    assert "at head" in found["migrations"]
    assert "12 of 12 verified" in found["indexes"]
    assert "Redis at redis://127.0.0.1:6379" in found["cache"]


def test_health_with_the_embedded_cache_and_broker(env: dict[str, str]) -> None:
    result = invoke("health", env={"REDIS_URL": None, "CELERY_BROKER_URL": None})
    assert result.exit_code == 0, result.output
    found = lines(result)
    assert found["cache"].split() == ["ok", "cache", "in-process", "(embedded)"]
    assert found["broker"].split() == ["ok", "broker", "filesystem", "(embedded)"]


def test_health_fails_fast_naming_an_unreachable_broker(env: dict[str, str]) -> None:
    started = time.monotonic()
    result = invoke("health", env={"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    found = lines(result)
    assert found["broker"].startswith("FAIL broker: redis://127.0.0.1:1/0"), result.output
    assert all(found[name].startswith("ok") for name in CHECKS if name != "broker")
    assert elapsed < 10


def test_health_names_an_unreachable_rabbitmq_broker(env: dict[str, str]) -> None:
    result = invoke("health", env={"CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"})
    assert result.exit_code == 1
    assert "FAIL broker: amqp://127.0.0.1:1//" in result.output
    assert "guest" not in result.output, "credentials must never be printed"


def test_health_names_a_dropped_index(env: dict[str, str], pg_engine: Engine) -> None:
    dropped = PERFORMANCE_INDEXES[6].name
    with pg_engine.begin() as conn:
        conn.execute(text(f"DROP INDEX {dropped}"))
    result = invoke("health")
    assert result.exit_code == 1, result.output
    found = lines(result)
    assert found["indexes"].startswith("FAIL indexes: 1 of 12")
    assert f"{dropped} MISSING" in found["indexes"]
    assert found["database"].startswith("ok")


def test_health_with_the_database_down_fails_every_database_check_quickly(
    env: dict[str, str],
) -> None:
    started = time.monotonic()
    result = invoke("health", env={"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"})
    assert time.monotonic() - started < 10
    assert result.exit_code == 1
    found = lines(result)
    assert found["database"].startswith("FAIL database: unreachable")
    assert found["migrations"] == "FAIL migrations: not checked: database unreachable"
    assert found["indexes"] == "FAIL indexes: not checked: database unreachable"
    assert found["cache"].startswith("ok") and found["broker"].startswith("ok")


def test_health_on_a_database_behind_head(env: dict[str, str], pg_url: str) -> None:
    from db.migrate import current_revision, downgrade, head_revision

    downgrade(pg_url, "-1")
    behind = current_revision(pg_url)
    result = invoke("health")
    assert result.exit_code == 1
    assert f"FAIL migrations: at {behind}, behind head {head_revision()}" in result.output


# report


def seed(engine: Engine) -> dict[str, Any]:
    """Contacts on a journey in every interesting state, and task failures old and new."""
    tenant = make_tenant(engine)
    fx = make_journey(engine, tenant, [("hello", "send_sms", {"body": "Hi"}, None)])
    contacts = make_contacts(engine, tenant, 7)
    rows = [make_journey_contact(engine, fx, contact) for contact in contacts]
    final = {
        rows[0]: ("COMPLETED", None),
        rows[1]: ("COMPLETED", None),
        rows[2]: ("FAILED", "loop_detected"),
        rows[3]: ("FAILED", "invalid_node_config: send_sms needs a body"),
        rows[4]: ("FAILED", "invalid_node_config: wait needs seconds or until"),
        rows[5]: ("WAITING", None),
    }  # rows[6] stays ACTIVE
    with engine.begin() as conn:
        for jc_id, (status, why) in final.items():
            conn.execute(
                text("UPDATE journey_contacts SET status = :s, status_reason = :r WHERE id = :id"),
                {"s": status, "r": why, "id": jc_id},
            )
        failures = [
            (
                "journeys.execute_node",
                "InvalidArguments: node_id is not a UUID\nTraceback ...",
                "1 hour",
            ),
            (
                "journeys.execute_node",
                "InvalidArguments: node_id is not a UUID\nother detail",
                "2 hours",
            ),
            ("journeys.enroll", "InvalidArguments: too many contacts", "3 hours"),
            ("journeys.enroll", "ancient", "3 days"),  # outside the 24 h window
        ]
        for task, error, age in failures:
            conn.execute(
                text(
                    "INSERT INTO task_failures (task_name, error, created_at) "
                    "VALUES (:t, :e, now() - CAST(:age AS interval))"
                ),
                {"t": task, "e": error, "age": age},
            )
    return {"tenant": tenant, "journey": fx}


def cache_traffic(redis_url: str, prefix: str) -> None:
    """Two lookups: one miss and fill, then a hit (node and tenant alike)."""
    jc = cache_module.build_cache(CacheSettings(url=redis_url, key_prefix=prefix))
    tenant, journey, node = (str(uuid.uuid4()) for _ in range(3))
    seen = jc.read(tenant, journey, node)
    jc.fill_nodes(tenant, journey, {node: {"type": "exit"}}, seen.journey_token)
    jc.fill_tenant(tenant, {"status": "ACTIVE"}, seen.tenant_token)
    assert jc.read(tenant, journey, node).node is not None
    jc.redis.close()


def push_messages(broker_url: str, count: int) -> None:
    client = redis.Redis.from_url(broker_url)
    client.lpush("journeys", *[json.dumps({"n": n}) for n in range(count)])
    client.lpush("journeys\x06\x163", json.dumps({"priority": 3}))  # kombu's priority list
    client.close()


def test_report_as_text(env: dict[str, str], pg_engine: Engine) -> None:
    seed(pg_engine)
    result = invoke("report")
    assert result.exit_code == 0, result.output
    out = result.output
    for spec in PERFORMANCE_INDEXES:
        assert spec.name in out
    assert "in use " in out and " of max_connections " in out
    assert "== Slowest statements" in out
    contacts = out.split("== Journey contacts by status", 1)[1].split("==", 1)[0]
    counts = {
        parts[0]: parts[1]
        for parts in (line.split() for line in contacts.splitlines())
        if len(parts) == 2
    }
    assert counts["ACTIVE"] == "1"
    assert counts["WAITING"] == "1"
    assert counts["COMPLETED"] == "2"
    assert counts["FAILED"] == "3"
    assert "invalid_node_config" in contacts
    assert "3 in the last 24 h" in out


def test_report_as_json(
    env: dict[str, str], pg_engine: Engine, redis_url: str, cache_prefix: str
) -> None:
    seed(pg_engine)
    cache_traffic(redis_url, cache_prefix)
    push_messages(env["CELERY_BROKER_URL"], 4)
    result = invoke("report", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(SECTIONS) <= set(report)
    assert set(SECTIONS) == {
        "statements",
        "indexes",
        "connections",
        "cache",
        "queue",
        "journey_contacts",
        "failures",
        "maintenance",
    }

    names = [row["name"] for row in report["indexes"]["rows"]]
    assert names == [spec.name for spec in PERFORMANCE_INDEXES]
    assert all(row["present"] and row["idx_scan"] >= 0 for row in report["indexes"]["rows"])

    connections = report["connections"]
    assert connections["max_connections"] > 0
    assert (
        1 <= connections["this_database"] <= connections["in_use"] <= connections["max_connections"]
    )

    contacts = report["journey_contacts"]
    assert contacts["by_status"] == {
        "ACTIVE": 1,
        "WAITING": 1,
        "PAUSED": 0,
        "COMPLETED": 2,
        "EXITED": 0,
        "FAILED": 3,
    }
    assert contacts["total"] == 7
    assert [(r["reason"], r["count"]) for r in contacts["failed_reasons"]] == [
        ("invalid_node_config", 2),
        ("loop_detected", 1),
    ]

    failures = report["failures"]
    assert failures["total"] == 3
    assert failures["by_task"] == {"journeys.execute_node": 2, "journeys.enroll": 1}
    assert failures["top"][0]["task"] == "journeys.execute_node"
    assert failures["top"][0]["error"] == "InvalidArguments: node_id is not a UUID"
    assert failures["top"][0]["count"] == 2

    for group in ("node", "tenant"):
        counters = report["cache"][group]
        assert (counters["hits"], counters["misses"], counters["fills"]) == (1, 1, 1)
        assert counters["hit_ratio"] == 0.5

    assert report["queue"]["queue"] == "journeys"
    assert report["queue"]["messages"] == 5
    assert report["queue"]["unacked_all_queues"] == 0

    statements = report["statements"]
    assert "rows" in statements or "pg_stat_statements" in statements["unavailable"]


def test_report_without_pg_stat_statements_says_how_to_enable_it(
    env: dict[str, str], pg_engine: Engine
) -> None:
    with pg_engine.connect() as conn:
        preload = conn.execute(text("SHOW shared_preload_libraries")).scalar_one()
    if "pg_stat_statements" in preload:
        pytest.skip("this server preloads pg_stat_statements")
    result = invoke("report")
    assert (
        "unavailable: pg_stat_statements is not loaded: add shared_preload_libraries = "
        "'pg_stat_statements' to postgresql.conf" in result.output
    )
    assert "CREATE EXTENSION pg_stat_statements" in result.output


def test_report_counts_a_rabbitmq_queue(env: dict[str, str]) -> None:
    with broker_namespace("rabbitmq") as url:
        queue = Queue("journeys", Exchange("journeys"), routing_key="journeys")
        with Connection(url) as conn:
            producer = conn.Producer()
            for n in range(3):
                producer.publish(
                    {"n": n}, exchange=queue.exchange, routing_key="journeys", declare=[queue]
                )
        report = json.loads(invoke("report", "--json", env={"CELERY_BROKER_URL": url}).output)
        assert report["queue"]["messages"] == 3
        assert report["queue"]["broker"].startswith("RabbitMQ at amqp://127.0.0.1:5672/")


def test_report_survives_unavailable_services(env: dict[str, str]) -> None:
    result = invoke(
        "report",
        "--json",
        env={"REDIS_URL": "redis://127.0.0.1:1/0", "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert "Connection refused" in report["cache"]["unavailable"]
    assert "Connection refused" in report["queue"]["unavailable"]
    assert "rows" in report["indexes"]

    down = invoke("report", env={"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"})
    assert down.exit_code == 0, down.output
    assert down.output.count("unavailable: database unreachable") == 6
    assert "Redis at redis://127.0.0.1:6379" in down.output


def test_report_with_the_embedded_defaults(env: dict[str, str]) -> None:
    result = invoke("report", "--json", env={"REDIS_URL": None, "CELERY_BROKER_URL": None})
    report = json.loads(result.output)
    assert "in-process cache" in report["cache"]["unavailable"]
    assert "embedded filesystem broker" in report["queue"]["unavailable"]
