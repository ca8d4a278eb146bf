"""Operations: the connection budget, JSON logs, Prometheus metrics under prefork, and the
Procfile.all run by honcho with beat, the invalidation listener and Flower."""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, text

from db.settings import ConfigError
from tests.factories import JourneyFixture, make_contacts, make_journey, make_tenant
from tests.services import unique_name
from tests.worker_process import (
    ROOT,
    WorkerProcess,
    broker_namespace,
    start_worker,
    wait_until,
    worker_env,
)
from worker import budget, logging_config, metrics_server
from worker.settings import (
    BudgetSettings,
    LoggingSettings,
    MetricsSettings,
    WorkerSettings,
    load_settings,
)

VENV_BIN = Path(sys.executable).parent
ENROLL = "journeys.enroll"
EXECUTE_BATCH = "journeys.execute_batch"
BATCH_KEYS = {
    "tenant_id",
    "journey_id",
    "node_id",
    "node_type",
    "size",
    "outcomes",
    "duration_ms",
    "task_id",
}
PRO = {"first_name": "Ann", "plan": "pro"}
BASIC = {"first_name": "Bob", "plan": "basic"}
# send_sms -> condition on plan -> send_sms (pro) or exit: three steps per contact, no waits.
BRANCHING = [
    ("hello", "send_sms", {"body": "Hello {{first_name}}"}, "check"),
    (
        "check",
        "condition",
        {
            "field": "plan",
            "op": "eq",
            "value": "pro",
            "true_node_id": "@thanks",
            "false_node_id": "@bye",
        },
        None,
    ),
    ("thanks", "send_sms", {"body": "Thanks {{first_name}}"}, None),
    ("bye", "exit", {}, None),
]
# A wait in the middle: only beat's due-step dispatch moves the contacts on.
WITH_WAIT = [
    ("hello", "send_sms", {"body": "Hello {{first_name}}"}, "pause"),
    ("pause", "wait", {"seconds": 1}, "again"),
    ("again", "send_sms", {"body": "Again {{first_name}}"}, None),
]


# --- the connection budget, as a pure function ------------------------------------------------


def test_budget_within_limits_is_ok() -> None:
    verdict = budget.check_budget(2, 2, budget=10, server_max=97, in_use=3)
    assert (verdict.level, verdict.needed) == ("ok", 4)


def test_budget_over_configured_budget_refuses() -> None:
    verdict = budget.check_budget(2, 2, budget=1, server_max=None, in_use=None)
    assert verdict.refuses
    assert verdict.needed == 4
    assert "DB_CONNECTION_BUDGET=1" in verdict.message
    assert "\n" not in verdict.message


def test_budget_exactly_at_budget_warns_not_refuses() -> None:
    verdict = budget.check_budget(2, 2, budget=4, server_max=None, in_use=None)
    assert verdict.level == "warn"
    assert "100% of DB_CONNECTION_BUDGET=4" in verdict.message


def test_budget_at_eighty_percent_warns() -> None:
    assert budget.check_budget(4, 2, budget=10, server_max=None, in_use=None).level == "warn"
    assert budget.check_budget(3, 2, budget=10, server_max=None, in_use=None).level == "ok"


def test_budget_over_server_capacity_refuses_without_a_budget() -> None:
    # 30 children x (pool 3 + overflow 1) on a default server (100 - 3 reserved).
    verdict = budget.check_budget(30, 4, budget=None, server_max=97, in_use=0)
    assert verdict.refuses
    assert "97 connections the server allows" in verdict.message


def test_budget_over_free_server_connections_only_warns() -> None:
    # Free connections change by the second (a rolling deploy's old worker): warn, never refuse.
    verdict = budget.check_budget(10, 2, budget=None, server_max=97, in_use=90)
    assert verdict.level == "warn"
    assert "7 connections free" in verdict.message
    near = budget.check_budget(10, 2, budget=None, server_max=97, in_use=72)
    assert near.level == "warn" and "80% of the 25 connections free" in near.message


def test_budget_with_nothing_known_is_ok() -> None:
    assert budget.check_budget(64, 2, budget=None, server_max=None, in_use=None).level == "ok"


def test_budget_rejects_nonsense_shapes() -> None:
    with pytest.raises(ValueError):
        budget.check_budget(0, 2, budget=None, server_max=None, in_use=None)


def test_only_prefork_children_multiply_the_pool() -> None:
    assert budget.connection_processes(8, prefork=True) == 8
    assert budget.connection_processes(8, prefork=False) == 1


@pytest.mark.parametrize(("raw", "expected"), [("", None), ("12", 12), (" 3 ", 3)])
def test_connection_budget_from_env(raw: str, expected: int | None) -> None:
    settings = BudgetSettings.from_env({"DB_CONNECTION_BUDGET": raw})
    assert settings.connection_budget == expected


@pytest.mark.parametrize("raw", ["0", "-1", "ten", "1.5", "nan", "inf"])
def test_connection_budget_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="DB_CONNECTION_BUDGET"):
        BudgetSettings.from_env({"DB_CONNECTION_BUDGET": raw})


def test_unreachable_database_warns_and_continues() -> None:
    from db.settings import DbSettings

    env = {"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"}
    verdict, note = budget.evaluate(2, True, DbSettings.from_env(env), None)
    assert verdict.level == "ok"
    assert note is not None and "could not read the server's max_connections" in note


def test_pgbouncer_skips_the_server_check() -> None:
    from db.settings import DbSettings

    env = {"DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:1/none", "DB_PGBOUNCER": "true"}
    verdict, note = budget.evaluate(2, True, DbSettings.from_env(env), None)
    assert verdict.level == "ok" and note is not None and "DB_PGBOUNCER" in note


def test_the_budget_refuses_over_the_configured_share() -> None:
    from db.settings import DbSettings

    db = DbSettings.from_env({"DATABASE_URL": "sqlite://"})
    verdict, note = budget.evaluate(4, True, db, 3)
    assert verdict.refuses and "DB_CONNECTION_BUDGET=3" in verdict.message
    assert note == "SQLite database: only DB_CONNECTION_BUDGET is checked"


def test_server_capacity_is_read_from_postgres(pg_url: str) -> None:
    from db.settings import DbSettings

    capacity = budget.read_server_capacity(DbSettings.from_env({"DATABASE_URL": pg_url}))
    assert capacity.max_connections >= 1
    assert 0 <= capacity.reserved < capacity.max_connections
    assert capacity.in_use >= 0


# --- settings ---------------------------------------------------------------------------------


def test_worker_concurrency_from_env() -> None:
    assert WorkerSettings.from_env({}).concurrency is None
    assert WorkerSettings.from_env({"WORKER_CONCURRENCY": "6"}).concurrency == 6
    for bad in ("0", "two", "-3", "nan", "2.5"):
        with pytest.raises(ConfigError, match="WORKER_CONCURRENCY"):
            WorkerSettings.from_env({"WORKER_CONCURRENCY": bad})


def test_create_app_uses_worker_concurrency() -> None:
    from worker.app import create_app

    app = create_app(WorkerSettings(broker_url="memory://", concurrency=5))
    assert app.conf.worker_concurrency == 5


def test_a_bad_log_format_fails_when_the_settings_are_loaded() -> None:
    with pytest.raises(ConfigError, match="LOG_FORMAT: expected one of text, json, got 'xml'"):
        load_settings({"LOG_FORMAT": "xml"})


def test_log_format_from_env() -> None:
    assert LoggingSettings.from_env({}).log_format == "text"
    assert LoggingSettings.from_env({"LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        LoggingSettings.from_env({"LOG_FORMAT": "yaml"})


def test_metrics_settings_from_env() -> None:
    assert not MetricsSettings.from_env({}).enabled
    settings = MetricsSettings.from_env(
        {"METRICS_PORT": "9100", "PROMETHEUS_MULTIPROC_DIR": "/tmp/x"}
    )
    assert (settings.port, settings.address, settings.directory) == (9100, "0.0.0.0", "/tmp/x")
    for bad in ("0", "70000", "http", "nan", "-1"):
        with pytest.raises(ConfigError, match="METRICS_PORT"):
            MetricsSettings.from_env({"METRICS_PORT": bad})


class FakeCache:
    def __init__(self, circuit_open: bool = False) -> None:
        self.circuit_open = circuit_open

    def stats(self) -> dict[str, dict[str, int]]:
        return {"node": {"hits": 7, "misses": 2}, "tenant": {"hits": 9, "misses": 1}}


def test_cache_collector_reports_shared_counters() -> None:
    collector = metrics_server.CacheStatsCollector()
    collector._cache = FakeCache()
    families = {f.name: f for f in collector.collect()}
    hits = families["journey_worker_cache_hits"]
    assert hits.type == "counter"
    assert {(s.labels["group"], s.value) for s in hits.samples} == {("node", 7), ("tenant", 9)}
    assert {s.value for s in families["journey_worker_cache_fills"].samples} == {0}


def test_cache_collector_reports_nothing_while_redis_is_down() -> None:
    collector = metrics_server.CacheStatsCollector()
    collector._cache = FakeCache(circuit_open=True)
    assert list(collector.collect()) == []
    collector._cache = False  # the in-process cache: its counters live in each child
    assert list(collector.collect()) == []


# --- JSON log records -------------------------------------------------------------------------


def _record(msg: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("journey_worker.steps", logging.INFO, __file__, 1, msg, args, None)
    if exc:
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            record.exc_info = sys.exc_info()
    record.__dict__.update(extra)
    return record


def test_json_formatter_one_object_with_extras() -> None:
    line = logging_config.JsonFormatter().format(
        _record(
            "step %s",
            "executed",
            tenant_id="t",
            duration_ms=1.5,
            node_type=None,
            journey_id=uuid.UUID(int=1),
        )
    )
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["message"] == "step executed"
    assert payload["level"] == "INFO"
    assert payload["logger"] == "journey_worker.steps"
    assert payload["time"].endswith("+00:00")
    assert payload["tenant_id"] == "t" and payload["duration_ms"] == 1.5
    assert payload["node_type"] is None
    assert payload["journey_id"] == str(uuid.UUID(int=1))
    assert "args" not in payload and "msg" not in payload


def test_json_formatter_keeps_a_traceback_on_one_line() -> None:
    line = logging_config.JsonFormatter().format(_record("failed", exc=True))
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exc_info"]


# --- real workers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(pg_url: str, broker_url: str, cache_prefix: str, **extra: str) -> dict[str, str]:
    env = worker_env(database_url=pg_url, broker_url=broker_url, cache_prefix=cache_prefix, **extra)
    for name in ("LOG_FORMAT", "METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR", "WORKER_CONCURRENCY"):
        if name not in extra:
            env.pop(name, None)
    env.setdefault("DB_CONNECTION_BUDGET", "")
    return env


def enroll(broker_url: str, journey: JourneyFixture, contacts: list[uuid.UUID]) -> None:
    """Publish journeys.enroll as an upstream Celery client would: ids only."""
    client = Celery(broker=broker_url)
    try:
        client.send_task(
            ENROLL,
            kwargs={
                "tenant_id": str(journey.tenant_id),
                "journey_id": str(journey.journey_id),
                "contact_ids": [str(c) for c in contacts],
            },
            queue="journeys",
        )
    finally:
        client.close()


def scalar(db: Engine, sql: str, **params: Any) -> Any:
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def finished(db: Engine, journey: JourneyFixture, total: int) -> bool:
    return (
        scalar(
            db,
            "SELECT count(*) FROM journey_contacts WHERE journey_id = :j "
            "AND status IN ('COMPLETED', 'EXITED')",
            j=journey.journey_id,
        )
        == total
    )


def executions(db: Engine) -> int:
    return int(scalar(db, "SELECT count(*) FROM journey_node_executions"))


@pytest.fixture
def db(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url, pool_size=1)
    yield engine
    engine.dispose()


@pytest.fixture
def redis_broker() -> Iterator[str]:
    with broker_namespace("redis") as url:
        yield url


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.stop(signal.SIGTERM, timeout=15)
        print(f"----- {worker.log_path.name} (tail) -----\n{worker.log()[-3000:]}")


def branching_journey(db: Engine) -> tuple[JourneyFixture, list[uuid.UUID]]:
    tenant = make_tenant(db)
    journey = make_journey(db, tenant, BRANCHING)
    contacts = make_contacts(db, tenant, 6, attributes=PRO) + make_contacts(
        db, tenant, 6, attributes=BASIC
    )
    return journey, contacts


@pytest.mark.slow
def test_worker_over_budget_refuses_to_start_with_one_line(pg_url: str) -> None:
    # WORKER_CONCURRENCY=8, but -c 2 on the command line wins.
    env = base_env(
        pg_url, "memory://", unique_name("jwops"), DB_CONNECTION_BUDGET="1", WORKER_CONCURRENCY="8"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-c", "2", "--loglevel", "INFO"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    lines = [line for line in output.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, output
    assert "4 database connections (2 children x 2 connections each)" in lines[0]
    assert "DB_CONNECTION_BUDGET=1" in lines[0]
    # Before the banner, the pool and the broker: nothing was consumed.
    assert "[tasks]" not in output and "ready." not in output
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_json_logs_one_object_per_record(
    pg_url: str, db: Engine, redis_broker: str, cache_prefix: str, tmp_path: Path, workers: list
) -> None:
    journey, contacts = branching_journey(db)
    # 2 children x 2 connections = 4 of a budget of 5: started, with a warning.
    env = base_env(pg_url, redis_broker, cache_prefix, LOG_FORMAT="json", DB_CONNECTION_BUDGET="5")
    worker = start_worker(env, tmp_path, concurrency=2)
    workers.append(worker)
    enroll(redis_broker, journey, contacts)
    wait_until(lambda: finished(db, journey, len(contacts)), timeout=40)
    total = executions(db)
    assert total == 12 * 3  # send_sms, condition, then send_sms or exit

    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]

    def batch_records() -> list[dict[str, Any]]:
        return [r for r in records() if r.get("event") == "batch"]

    def executed_in_batches() -> int:
        return sum(r["outcomes"].get("executed", 0) for r in batch_records())

    wait_until(lambda: executed_in_batches() >= total, timeout=10)
    worker.stop()
    log = worker.log()
    # No record in Celery's human format; what is not JSON is the banner and shutdown notice,
    # which Celery prints and never logs.
    assert not [line for line in log.splitlines() if line.startswith("[20")]
    batches = batch_records()
    # One line per batch, not per contact: 12 contacts walk 3 nodes in a handful of batches.
    assert executed_in_batches() == total
    assert len(batches) < total / 2, len(batches)
    for record in batches:
        assert record.keys() >= BATCH_KEYS, record
        assert record["logger"] == "journey_worker.steps" and record["level"] == "INFO"
        assert record["journey_id"] == str(journey.journey_id)
        assert isinstance(record["duration_ms"], int | float)
        assert record["message"].startswith("batch ")
        assert record["size"] == sum(record["outcomes"].values())
    assert {r["node_type"] for r in batches} == {"send_sms", "condition", "exit"}
    # Contacts whose step simply executed get no line of their own at INFO.
    assert not [r for r in records() if r.get("event") == "step"]
    warnings = [r for r in records() if r["logger"] == "journey_worker.budget"]
    assert warnings and warnings[0]["level"] == "WARNING"
    assert "80% of DB_CONNECTION_BUDGET=5" in warnings[0]["message"]
    # Celery's own task lines are JSON too, and carry the task id.
    received = [r for r in records() if r["message"].startswith("Task journeys.enroll[")]
    assert received


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **match: str
) -> float:
    return sum(
        value
        for labels, value in samples.get(name, {}).items()
        if all(dict(labels).get(k) == v for k, v in match.items())
    )


@pytest.mark.slow
def test_prometheus_metrics_summed_over_prefork_children(
    pg_url: str, db: Engine, redis_broker: str, cache_prefix: str, tmp_path: Path, workers: list
) -> None:
    journey, contacts = branching_journey(db)
    port = free_port()
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "counter_999999.db").write_bytes(b"left over from a previous run")
    env = base_env(
        pg_url,
        redis_broker,
        cache_prefix,
        METRICS_PORT=str(port),
        METRICS_ADDRESS="127.0.0.1",
        PROMETHEUS_MULTIPROC_DIR=str(prom_dir),
    )
    worker = start_worker(env, tmp_path, concurrency=2)
    workers.append(worker)
    assert not (prom_dir / "counter_999999.db").exists()
    children = set(worker.children())
    enroll(redis_broker, journey, contacts)
    wait_until(lambda: finished(db, journey, len(contacts)), timeout=40)
    executed = executions(db)
    wait_until(
        lambda: total(scrape(port), "journey_worker_steps_total", outcome="executed") == executed,
        timeout=10,
    )
    samples = scrape(port)
    assert (
        total(samples, "journey_worker_steps_total", node_type="send_sms", status="COMPLETED") == 18
    )
    assert total(samples, "journey_worker_steps_total", node_type="exit") == 6
    # One observation per batch; the batch sizes add up to the steps.
    batches = total(samples, "journey_worker_step_seconds_count")
    assert 0 < batches < executed
    assert total(samples, "journey_worker_batch_contacts_count") == batches
    assert total(samples, "journey_worker_batch_contacts_sum") == total(
        samples, "journey_worker_steps_total"
    )
    assert total(samples, "journey_worker_step_seconds_sum") > 0
    assert total(samples, "journey_worker_step_seconds_bucket", le="+Inf") == batches
    # The cache's counters, for this test's key prefix: one miss per group, then hits.
    assert total(samples, "journey_worker_cache_misses_total", group="node") >= 1
    assert total(samples, "journey_worker_cache_hits_total", group="node") >= 1
    # One cache read per batch.
    assert (
        total(samples, "journey_worker_cache_hits_total", group="node")
        + total(samples, "journey_worker_cache_misses_total", group="node")
        == batches
    )
    # The values came from the children's files, not from the parent.
    writers = {int(p.stem.rsplit("_", 1)[1]) for p in prom_dir.glob("counter_*.db")}
    assert writers and writers <= children, (writers, children)
    # A warm shutdown: about 2.6 s here on an idle machine (billiard's 1 s pause in each exiting
    # child, the prefork timer's join, the metrics server's poll), printed, never asserted.
    stopping = time.monotonic()
    worker.stop()
    print(f"warm shutdown took {time.monotonic() - stopping:.1f}s")
    assert worker.proc.returncode == 0


@pytest.mark.slow
def test_metrics_port_in_use_refuses_to_start(pg_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(
            pg_url,
            "memory://",
            unique_name("jwops"),
            METRICS_PORT=str(port),
            METRICS_ADDRESS="127.0.0.1",
        )
        result = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "-c", "1"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"METRICS_PORT: cannot listen on 127.0.0.1:{port}" in output


# --- Procfile.all under honcho, with Flower -----------------------------------------------------


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    queue = [pid]
    while queue:
        out = subprocess.run(
            ["pgrep", "-P", str(queue.pop())], capture_output=True, text=True
        ).stdout
        for child in map(int, out.split()):
            if child not in found:
                found.add(child)
                queue.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


def listen_command_exists() -> bool:
    result = subprocess.run(
        [str(VENV_BIN / "journey-worker"), "listen", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


@pytest.mark.slow
def test_procfile_under_honcho_runs_a_journey_seen_by_flower(
    pg_url: str, db: Engine, redis_broker: str, cache_prefix: str, tmp_path: Path
) -> None:
    tenant = make_tenant(db)
    journey = make_journey(db, tenant, WITH_WAIT)
    contacts = make_contacts(db, tenant, 5, attributes=PRO)
    phones = [f"+1555{i:07d}" for i in range(5)]
    flower_port = free_port()
    env = base_env(
        pg_url,
        redis_broker,
        cache_prefix,
        FLOWER_UNAUTHENTICATED_API="true",
        FLOWER_PORT=str(flower_port),
        BEAT_SCHEDULE_FILE=str(tmp_path / "beat-schedule"),
        WORKER_CONCURRENCY="2",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    processes = ["worker", "beat", "flower"]
    if listen_command_exists():
        processes.append("listen")
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    log_path = tmp_path / "honcho.log"
    with log_path.open("w") as handle:
        honcho = subprocess.Popen(
            [
                *(str(VENV_BIN / "honcho"), "--env", str(empty_env_file)),
                *("-f", str(ROOT / "Procfile.all"), "start", *processes),
            ],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def log() -> str:
        return log_path.read_text(errors="replace")

    def up(needle: str) -> bool:
        if honcho.poll() is not None:
            raise AssertionError(f"honcho exited ({honcho.returncode}):\n{log()[-5000:]}")
        return needle in log()

    def flower_ok() -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{flower_port}/healthcheck", timeout=2
            ) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return up("never")

    pids: set[int] = set()
    try:
        wait_until(lambda: up("ready."), timeout=60)
        wait_until(flower_ok, timeout=60)
        if "listen" in processes:
            wait_until(lambda: up("listening on channel"), timeout=30)
        pids = descendants(honcho.pid)
        # Task events are off until someone watches: Flower turns them on at run time, and
        # only the tasks that run after that are seen.
        wait_until(lambda: up("enabled by remote"), timeout=30)

        enroll(redis_broker, journey, contacts)
        wait_until(lambda: finished(db, journey, len(contacts)), timeout=60)
        assert executions(db) == 5 * 3
        steps = 5 * 3

        # /api/workers: the Procfile's worker, found by its queue.
        workers = get_json(f"http://127.0.0.1:{flower_port}/api/workers?refresh=1")
        assert any(
            any(q.get("name") == "journeys" for q in info.get("active_queues") or [])
            for info in workers.values()
        ), workers

        # /api/tasks: every batch, named; arguments are ids (and steps) only.
        def tasks() -> dict[str, Any]:
            return get_json(f"http://127.0.0.1:{flower_port}/api/tasks")

        def contacts_in_succeeded_batches() -> int:
            return sum(
                len(ast.literal_eval(t["kwargs"])["journey_contacts"])
                for t in tasks().values()
                if t.get("name") == EXECUTE_BATCH and t.get("state") == "SUCCESS"
            )

        wait_until(lambda: contacts_in_succeeded_batches() >= steps, timeout=20)
        listing = tasks()
        executed = [t for t in listing.values() if t.get("name") == EXECUTE_BATCH]
        assert [t for t in listing.values() if t.get("name") == ENROLL]
        for task in executed:
            kwargs = ast.literal_eval(task["kwargs"])
            assert set(kwargs) == {"tenant_id", "node_id", "journey_contacts"}, kwargs
        for task in listing.values():
            # Whatever the task, its arguments are ids, lists of ids and step numbers.
            assert ast.literal_eval(task.get("args") or "()") in ((), []), task
            for key, value in ast.literal_eval(task.get("kwargs") or "{}").items():
                if key == "step":
                    assert isinstance(value, int), task
                elif key == "journey_contacts":
                    for journey_contact_id, step in value:
                        uuid.UUID(journey_contact_id)
                        assert isinstance(step, int), task
                else:
                    for item in value if isinstance(value, list) else [value]:
                        uuid.UUID(item)
        raw = json.dumps(listing)
        for secret in [*phones, "Hello Ann", "Again Ann", "first_name", "@example.test"]:
            assert secret not in raw, secret
    finally:
        pids |= descendants(honcho.pid)
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(30)
        except subprocess.TimeoutExpired:
            for pid in [honcho.pid, *pids]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            honcho.wait(10)
        print(f"----- honcho (tail) -----\n{log()[-4000:]}")

    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if alive(pid)], log()[-3000:]
    output = log()
    for name in processes:
        assert f"{name}.1 stopped" in output, output[-3000:]
    # honcho escalates to SIGKILL after 5 s: nothing may need it.
    assert "sending SIGKILL" not in output, output[-3000:]


def test_the_worker_parent_freezes_its_startup_objects_before_forking() -> None:
    import gc

    from worker.signals import freeze_startup_objects

    try:
        freeze_startup_objects()
        # What the children inherit and the parent's exit would otherwise collect, again and
        # again: out of the collector's reach.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
