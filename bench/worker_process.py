"""Real worker processes on a broker namespace no one else uses: the one rig the bench and the
end-to-end tests share (tests/worker_process.py adds the tests' defaults on top of it).

- broker_namespace: a claimed, flushed Redis database or a fresh RabbitMQ vhost (rabbitmqctl)
- WorkerProcess: `celery -A <app> worker`, prefork, as operators run it; its log, children, CPU,
  warm stop and SIGKILL
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from bench.proc import proc_cpu_seconds

CLAIM_TTL = 900  # seconds a Redis broker database stays claimed without renewal
CLAIM_KEY = "jw:test-broker-db:{}"  # in db 0: tests and benches never flush each other's


class WorkerError(RuntimeError):
    """A worker process exited, or did not log what it was expected to."""


class BrokerNamespaceError(RuntimeError):
    """No broker namespace could be had (all Redis databases claimed, rabbitmqctl failed)."""


@contextmanager
def broker_namespace(
    kind: str, redis_url: str, rabbitmq_url: str, *, renew: bool = True
) -> Iterator[str]:
    """A broker URL no one else uses: a claimed, flushed Redis database (1 to 15) or a fresh
    RabbitMQ vhost, removed afterwards. renew: keep the Redis claim alive past CLAIM_TTL."""
    if kind == "redis":
        with _redis_namespace(redis_url, renew) as url:
            yield url
        return
    if kind != "rabbitmq":
        raise ValueError(f"unknown broker {kind!r}")
    vhost = f"jw_{uuid.uuid4().hex[:12]}"
    user = urlsplit(rabbitmq_url).username or "guest"
    try:
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BrokerNamespaceError(
            f"could not create a RabbitMQ vhost with rabbitmqctl: {exc}"
        ) from exc
    try:
        yield rabbitmq_url.rstrip("/") + "/" + vhost
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


@contextmanager
def _redis_namespace(redis_url: str, renew: bool) -> Iterator[str]:
    registry = redis.Redis.from_url(redis_url)
    token = f"claim_{uuid.uuid4().hex[:12]}"
    db = next(
        (
            n
            for n in random.sample(range(1, 16), 15)
            if registry.set(CLAIM_KEY.format(n), token, nx=True, ex=CLAIM_TTL)
        ),
        None,
    )
    if db is None:
        registry.close()
        raise BrokerNamespaceError("all 15 Redis broker databases are claimed by other runs")
    claim = CLAIM_KEY.format(db)
    stop = threading.Event()

    def keep_claim() -> None:
        # A large run outlives the claim's TTL: renew it while the database is held.
        while not stop.wait(CLAIM_TTL / 5):
            with suppress(redis.RedisError):
                if registry.get(claim) == token.encode():
                    registry.expire(claim, CLAIM_TTL)

    renewer = threading.Thread(target=keep_claim, name="broker-claim", daemon=True)
    if renew:
        renewer.start()
    parts = urlsplit(redis_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        stop.set()
        if renew:
            renewer.join(5)
        client.flushdb()
        client.close()
        if registry.get(claim) == token.encode():
            registry.delete(claim)
        registry.close()


class WorkerProcess:
    """One `celery -A <app> worker` process, its log in a file."""

    def __init__(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @classmethod
    def start(
        cls,
        app: str,
        env: dict[str, str],
        log_path: Path,
        *,
        cwd: Path,
        concurrency: int = 2,
        loglevel: str = "INFO",
        hostname: str | None = None,
        queues: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> WorkerProcess:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
            "--hostname",
            hostname or f"w-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip",
            "--without-mingle",
            *(["--queues", ",".join(queues)] if queues else []),
            *extra_args,
        ]
        with log_path.open("w") as handle:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True
            )
        return cls(proc, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                raise WorkerError(f"worker exited ({self.proc.returncode}):\n{self.log_tail(4000)}")
            time.sleep(0.1)
        raise WorkerError(f"{needle!r} not in worker log after {timeout}s:\n{self.log_tail(4000)}")

    def children(self) -> list[int]:
        """The prefork children's pids (Linux /proc; pgrep where /proc has no children file)."""
        pids: list[int] = []
        try:
            for thread in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(p) for p in (thread / "children").read_text().split()]
            return pids
        except (OSError, ValueError):
            out = subprocess.run(
                ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
            ).stdout
            return [int(pid) for pid in out.split()]

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the worker and its children so far (Linux /proc), else None.

        Children that exited are not counted; prefork children live as long as the worker
        unless --max-tasks-per-child is set."""
        return proc_cpu_seconds([self.proc.pid, *self.children()])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Warm shutdown (SIGTERM); SIGKILL of this worker and its own children if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_all()
        return self.proc.returncode

    def kill_all(self) -> None:
        """SIGKILL the main process and its children at once, as an OOM killer or a host loss."""
        for pid in [self.proc.pid, *self.children()]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
