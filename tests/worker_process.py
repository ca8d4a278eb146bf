"""Real worker processes for end-to-end tests: `celery -A worker worker` as operators run it,
on a broker namespace (Redis database or RabbitMQ vhost) that only one test uses. The rig itself
is bench/worker_process.py, shared with the benchmark; this adds the tests' services and
defaults."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.worker_process import WorkerProcess
from bench.worker_process import broker_namespace as shared_broker_namespace
from tests.services import RABBITMQ_URL, REDIS_URL, require

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def broker_namespace(kind: str) -> Iterator[str]:
    """A broker URL no other test uses: a flushed Redis database, or a fresh RabbitMQ vhost."""
    kind = "redis" if kind == "redis" else "rabbitmq"  # any other name (amqp, ...) is RabbitMQ
    require("Redis" if kind == "redis" else "RabbitMQ")
    with shared_broker_namespace(kind, REDIS_URL, RABBITMQ_URL, renew=False) as url:
        yield url


def worker_env(
    *, database_url: str, broker_url: str, cache_prefix: str, **extra: str
) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "REDIS_"))
    }
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        REDIS_URL=REDIS_URL,
        CACHE_KEY_PREFIX=cache_prefix,
        DISPATCH_INTERVAL_SECONDS="0.5",
        # Lost steps come back only once the lanes have been empty this long (30 s by
        # default); the tests' own backlogs last a second or two.
        REDISPATCH_QUIET_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_worker(
    env: dict[str, str],
    log_dir: Path,
    *,
    name: str = "w1",
    concurrency: int = 2,
    beat: bool = False,
    extra_args: tuple[str, ...] = (),
) -> WorkerProcess:
    log_path = log_dir / f"{name}.log"
    worker = WorkerProcess.start(
        "worker",
        env,
        log_path,
        cwd=ROOT,
        concurrency=concurrency,
        hostname=f"{name}@%h",
        extra_args=(
            *(["--beat", "--schedule", str(log_dir / f"{name}-beat-schedule")] if beat else []),
            *extra_args,
        ),
    )
    worker.wait_for_log("ready.", timeout=60)
    return worker


def wait_until(predicate: Callable[[], bool], timeout: float = 60, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
