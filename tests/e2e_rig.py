"""The end-to-end rig: real `celery -A worker worker` processes on a test's own database and
broker namespace, a kombu producer (upstream's view), and plain-SQL reads of what they did.
The fixtures are registered in tests/conftest.py."""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.kombu_producer import KombuProducer
from tests.services import unique_name
from tests.worker_process import WorkerProcess, broker_namespace, start_worker, worker_env

FINISHED = ("COMPLETED", "EXITED", "FAILED")
STEP_LINE = re.compile(
    r"step (?P<outcome>\w+) tenant_id=\S+ journey_id=\S+ journey_contact_id=(?P<jc>\S+) "
    r"node_id=(?P<node>\S+) type=(?P<type>\S+)"
)

# --- the rig ----------------------------------------------------------------------------------


@dataclass
class Rig:
    """Workers for one test, on the test's own database, logs under tmp_path."""

    pg_url: str
    db: Engine
    log_dir: Path
    cache_prefix: str
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, broker_url: str, **extra: str) -> dict[str, str]:
        # These tests read Celery's text lines ("step ...", "ERROR/..."); their webhooks are
        # local servers, which only an operator's allow-list lets a webhook reach.
        extra = {"LOG_FORMAT": "text", "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", **extra}
        return worker_env(
            database_url=self.pg_url,
            broker_url=broker_url,
            cache_prefix=self.cache_prefix,
            **extra,
        )

    def start(self, env: dict[str, str], **options: Any) -> WorkerProcess:
        worker = start_worker(env, self.log_dir, **options)
        self.workers.append(worker)
        return worker

    def cleanup(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                # The test is over: no need to wait for a warm shutdown.
                worker.kill_all()
        for worker in self.workers:
            # Whatever the test found, the logs help whoever reads a failure.
            print(f"----- {worker.log_path.name} (tail) -----\n{worker.log()[-3000:]}")


@pytest.fixture
def rig(pg_url: str, tmp_path: Path) -> Iterator[Rig]:
    db = create_engine(pg_url, pool_size=2)
    rig = Rig(pg_url, db, tmp_path, unique_name("jwe2e"))
    try:
        yield rig
    finally:
        rig.cleanup()
        db.dispose()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with broker_namespace(request.param) as url:
        yield url


@pytest.fixture
def redis_broker_url() -> Iterator[str]:
    with broker_namespace("redis") as url:
        yield url


@pytest.fixture
def rabbitmq_broker_url() -> Iterator[str]:
    with broker_namespace("rabbitmq") as url:
        yield url


@pytest.fixture
def producer(request: pytest.FixtureRequest) -> Iterator[KombuProducer]:
    # The broker fixture a test asked for decides where the producer publishes.
    for name in ("broker_url", "redis_broker_url", "rabbitmq_broker_url"):
        if name in request.fixturenames:
            url = request.getfixturevalue(name)
            break
    else:  # pragma: no cover - a test wiring mistake
        raise AssertionError("producer needs a broker fixture")
    with KombuProducer(url) as kombu:
        yield kombu


# --- database reads ---------------------------------------------------------------------------


def scalar(db: Engine, sql: str, **params: Any) -> Any:
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rows(db: Engine, sql: str, **params: Any) -> list[Any]:
    with db.connect() as conn:
        return list(conn.execute(text(sql), params))


def journey_statuses(db: Engine, journey_id: uuid.UUID) -> Counter[str]:
    return Counter(
        dict(
            rows(
                db,
                "SELECT status, count(*) FROM journey_contacts WHERE journey_id = :j GROUP BY status",
                j=journey_id,
            )
        )
    )


def all_finished(db: Engine, journey_id: uuid.UUID, total: int) -> bool:
    statuses = journey_statuses(db, journey_id)
    return sum(statuses[s] for s in FINISHED) == total


def assert_one_execution_per_step(db: Engine) -> None:
    """No (journey_contact_id, step_seq) twice, and every finished contact's steps are 0..n-1."""
    twice = rows(
        db,
        "SELECT journey_contact_id, step_seq, count(*) FROM journey_node_executions "
        "GROUP BY 1, 2 HAVING count(*) > 1",
    )
    assert twice == []
    gaps = rows(
        db,
        "SELECT jc.id, jc.step_seq, count(e.id), coalesce(max(e.step_seq), -1) "
        "FROM journey_contacts jc LEFT JOIN journey_node_executions e "
        "ON e.journey_contact_id = jc.id "
        "WHERE jc.status IN ('COMPLETED', 'EXITED') "
        "GROUP BY jc.id, jc.step_seq "
        "HAVING count(e.id) <> jc.step_seq OR coalesce(max(e.step_seq), -1) <> jc.step_seq - 1",
    )
    assert gaps == []


def assert_one_message_per_send(db: Engine) -> None:
    sends = scalar(
        db,
        "SELECT count(*) FROM journey_node_executions e JOIN journey_nodes n ON n.id = e.node_id "
        "WHERE n.type = 'send_sms' AND e.status = 'COMPLETED'",
    )
    messages = scalar(db, "SELECT count(*) FROM messages")
    per_execution = scalar(
        db,
        "SELECT count(*) FROM (SELECT journey_node_execution_id FROM messages "
        "GROUP BY 1 HAVING count(*) > 1) twice",
    )
    orphans = scalar(db, "SELECT count(*) FROM messages WHERE journey_node_execution_id IS NULL")
    assert (messages, per_execution, orphans) == (sends, 0, 0)


def all_messages_sent(db: Engine) -> bool:
    return scalar(db, "SELECT count(*) FROM messages WHERE status <> 'SENT'") == 0


def step_lines(log: str, outcome: str = "executed") -> list[re.Match[str]]:
    return [m for m in STEP_LINE.finditer(log) if m.group("outcome") == outcome]


BATCH_LINE = re.compile(r"batch tenant_id=\S+ .* size=\d+ (?P<outcomes>[^\n]*?) duration_ms=")


def outcomes_in_batches(log: str) -> Counter[str]:
    """What the worker's batch lines say happened, summed over its batches."""
    total: Counter[str] = Counter()
    for match in BATCH_LINE.finditer(log):
        for part in match.group("outcomes").split():
            name, _, count = part.partition("=")
            total[name] += int(count)
    return total


def executed_in_batches(log: str) -> int:
    """Steps the worker's batch lines say it executed (a duplicate is not one)."""
    return outcomes_in_batches(log)["executed"]


def pid_with_local_port(pids: list[int], port: int) -> int | None:
    """Which of pids owns the TCP socket bound locally to `port` (the webhook's client)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    return None
