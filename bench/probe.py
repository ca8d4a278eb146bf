"""Enqueue-to-commit timestamps for every bench task, whatever the mode.

The publisher stamps each message's headers with the wall-clock time it was published and the
bench run it belongs to (followups inherit the run of the task that publishes them). In the
worker child, the last SQLAlchemy commit of the task (or the ceiling task's mark) is its commit
time; after the task returns, one tab-separated line per task is appended to a file of that
process under BENCH_SAMPLES_DIR:

    run  task  enqueued_at  started_at  committed_at  finished_at  statements  commits
    publishes  node_id  contacts  sql_seconds

statements counts the SQL statements the task sent (SQLAlchemy cursor executions) and sql_seconds
the wall time spent in them (execute to result, the server's work and the wire), commits its
COMMITs, publishes its messages; node_id and contacts (the batch size) come from the task's
kwargs, empty and 0 where the task has none.

Installed by bench.celery_app only when BENCH_SAMPLES_DIR is set; costs one small write per task.
"""

from __future__ import annotations

import cProfile
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.signals import before_task_publish, task_postrun, task_prerun, worker_process_shutdown
from sqlalchemy import Engine, event

SAMPLES_ENV = "BENCH_SAMPLES_DIR"
# Optional: cProfile every task in the worker children, one pstats file per child and task name.
PROFILE_ENV = "BENCH_WORKER_PROFILE_DIR"
HEADER_RUN = "bench_run"
HEADER_ENQUEUED = "bench_enqueued_at"

_local = threading.local()
_installed = False
_install_lock = threading.Lock()


@dataclass(frozen=True)
class Sample:
    run: str
    task: str
    enqueued_at: float
    started_at: float
    committed_at: float
    finished_at: float
    statements: int = 0
    commits: int = 0
    publishes: int = 0
    node_id: str = ""
    contacts: int = 0
    sql_seconds: float = 0.0

    @property
    def latency(self) -> float:
        """Enqueue to commit."""
        return self.committed_at - self.enqueued_at

    @property
    def service(self) -> float:
        """The task's own time in the worker child: from task_prerun to task_postrun."""
        return self.finished_at - self.started_at


@contextmanager
def run_context(run: str) -> Iterator[None]:
    """Messages published in this block (by this thread) belong to `run`."""
    previous = getattr(_local, "run", None)
    _local.run = run
    try:
        yield
    finally:
        _local.run = previous


def mark_commit() -> None:
    """What a task without a transaction calls where it would commit (the ceiling task)."""
    _local.committed_at = time.time()


def _before_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    _local.publishes = getattr(_local, "publishes", 0) + 1
    if headers is None:
        return
    headers[HEADER_ENQUEUED] = time.time()
    run = getattr(_local, "run", None)
    if run is not None:
        headers[HEADER_RUN] = run


def _prerun(task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    _local.statements = _local.commits = _local.publishes = 0
    _local.sql_seconds = 0.0
    kwargs = kwargs or {}
    _local.node_id = str(kwargs.get("node_id") or "")
    batch = kwargs.get("journey_contacts") or kwargs.get("contact_ids") or kwargs.get("message_ids")
    _local.contacts = len(batch) if isinstance(batch, list) else (1 if _local.node_id else 0)
    _local.run = request.get(HEADER_RUN) if request is not None else None
    _local.enqueued_at = request.get(HEADER_ENQUEUED) if request is not None else None
    _local.committed_at = None
    if _profiles is not None and task is not None:
        profiler = _profiles.setdefault(task.name, cProfile.Profile())
        _local.profiler = profiler
        profiler.enable()
    _local.started_at = time.time()


def _postrun(task: Any = None, **_: Any) -> None:
    profiler = getattr(_local, "profiler", None)
    if profiler is not None:
        profiler.disable()
        _local.profiler = None
        _count_profiled()
    run, enqueued = getattr(_local, "run", None), getattr(_local, "enqueued_at", None)
    if run is None or enqueued is None:
        return
    finished = time.time()
    committed = getattr(_local, "committed_at", None) or finished
    started = getattr(_local, "started_at", finished)
    counts = (
        getattr(_local, "statements", 0),
        getattr(_local, "commits", 0),
        getattr(_local, "publishes", 0),
        getattr(_local, "node_id", ""),
        getattr(_local, "contacts", 0),
        repr(getattr(_local, "sql_seconds", 0.0)),
    )
    line = (
        f"{run}\t{task.name}\t{enqueued!r}\t{started!r}\t{committed!r}\t{finished!r}\t"
        + "\t".join(str(c) for c in counts)
        + "\n"
    )
    _local.run = None
    fd = getattr(_local, "fd", None)
    if fd is None or getattr(_local, "pid", None) != os.getpid():
        directory = Path(os.environ[SAMPLES_ENV])
        fd = os.open(
            directory / f"samples-{os.getpid()}-{threading.get_ident()}.tsv",
            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            0o644,
        )
        _local.fd, _local.pid = fd, os.getpid()
    os.write(fd, line.encode())


_profiles: dict[str, cProfile.Profile] | None = None
_profiled = 0


def _count_profiled() -> None:
    """Dump every 100 tasks: prefork children may be stopped without a chance to dump."""
    global _profiled
    _profiled += 1
    if _profiled % 100 == 0:
        dump_profiles()


def dump_profiles(*_: Any, **__: Any) -> None:
    if not _profiles:
        return
    directory = Path(os.environ[PROFILE_ENV])
    for name, profiler in _profiles.items():
        profiler.dump_stats(str(directory / f"{name}-{os.getpid()}.pstats"))


def _on_commit(_conn: Any) -> None:
    _local.committed_at = time.time()
    _local.commits = getattr(_local, "commits", 0) + 1


def _on_statement(*_: Any) -> None:
    _local.statements = getattr(_local, "statements", 0) + 1
    _local.statement_started = time.perf_counter()


def _after_statement(conn: Any, *_: Any) -> None:
    started = getattr(_local, "statement_started", None)
    if started is not None:
        _local.sql_seconds = getattr(_local, "sql_seconds", 0.0) + time.perf_counter() - started
    # An autocommit statement (the step store's) commits as it returns.
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        _local.committed_at = time.time()


def install() -> None:
    """Connect the handlers (idempotent). Publishers and workers both call it."""
    global _installed
    with _install_lock:
        if _installed:
            return
        before_task_publish.connect(_before_publish, weak=False)
        task_prerun.connect(_prerun, weak=False)
        task_postrun.connect(_postrun, weak=False)
        event.listen(Engine, "commit", _on_commit)
        event.listen(Engine, "before_cursor_execute", _on_statement)
        event.listen(Engine, "after_cursor_execute", _after_statement)
        if os.environ.get(PROFILE_ENV):
            global _profiles
            _profiles = {}
            worker_process_shutdown.connect(dump_profiles, weak=False)
        _installed = True


class SampleReader:
    """Reads the worker children's sample files incrementally (complete lines only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[Path, int] = {}
        self.samples: dict[str, list[Sample]] = {}

    def poll(self) -> None:
        for path in sorted(self.directory.glob("samples-*.tsv")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            end = data.rfind(b"\n") + 1
            if end <= 0:
                continue
            self._offsets[path] = offset + end
            for raw in data[:end].decode().splitlines():
                run, task, *fields = raw.split("\t")
                times = [float(t) for t in fields[:4]]
                statements, commits, publishes = (int(v) for v in fields[4:7])
                sample = Sample(
                    run,
                    task,
                    *times,
                    statements,
                    commits,
                    publishes,
                    fields[7],
                    int(fields[8]),
                    float(fields[9]),
                )
                self.samples.setdefault(run, []).append(sample)

    def count(self, run: str, tasks: tuple[str, ...] | None = None) -> int:
        """Samples of this run (of these task names only, if given)."""
        found = self.samples.get(run, ())
        if tasks is None:
            return len(found)
        return sum(1 for s in found if s.task in tasks)
