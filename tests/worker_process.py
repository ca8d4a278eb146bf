"""Real worker processes for end-to-end tests: `celery -A worker worker` as operators run it,
on a broker namespace (Redis database or RabbitMQ vhost) that only one test uses."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import redis

from tests.services import RABBITMQ_URL, REDIS_URL, require, unique_name

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def broker_namespace(kind: str) -> Iterator[str]:
    """A broker URL no other test uses: a flushed Redis database, or a fresh RabbitMQ vhost."""
    if kind == "redis":
        require("Redis")
        # Claim a database number in db 0 so concurrent test runs never share (and flush) one.
        registry = redis.Redis.from_url(REDIS_URL)
        token = unique_name("claim")
        candidates = random.sample(range(1, 16), 15)
        db = next(
            (
                n
                for n in candidates
                if registry.set(f"jw:test-broker-db:{n}", token, nx=True, ex=900)
            ),
            None,
        )
        if db is None:
            raise RuntimeError("all 15 Redis test databases are claimed by other test runs")
        url = REDIS_URL.rsplit("/", 1)[0] + f"/{db}"
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()
            client.close()
            if registry.get(f"jw:test-broker-db:{db}") == token.encode():
                registry.delete(f"jw:test-broker-db:{db}")
            registry.close()
        return
    require("RabbitMQ")
    vhost = unique_name("jw")
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield RABBITMQ_URL.rstrip("/") + "/" + vhost
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited ({self.proc.returncode}):\n{self.log()[-4000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(
            f"{needle!r} not in worker log after {timeout}s:\n{self.log()[-4000:]}"
        )

    def children(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_all()
        return self.proc.returncode

    def kill_all(self) -> None:
        """SIGKILL the main process and its children at once, as an OOM killer or a host loss."""
        pids = self.children()
        for pid in [self.proc.pid, *pids]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


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
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        *(["--beat", "--schedule", str(log_dir / f"{name}-beat-schedule")] if beat else []),
        *extra_args,
    ]
    handle = log_path.open("w")
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True
    )
    worker = WorkerProcess(proc, log_path)
    worker.wait_for_log("ready.", timeout=60)
    return worker


def wait_until(predicate: Callable[[], bool], timeout: float = 60, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
