"""Threads in tests: an assert (or any exception) inside a thread fails the test that started it.

A plain threading.Thread prints its exception to stderr and dies; the test goes on and may pass.
Here every exception is kept and raised again in the test's thread when the threads are joined.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One callable on its own thread: its result, or the exception it raised."""

    target: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.target(*self.args, **self.kwargs)
        except BaseException as exc:  # raised again in the test's thread by join()
            self.error = exc


class Threads:
    """Start jobs with `start`; `join` waits for all of them and re-raises the first exception
    any of them raised (the others are attached as notes), or fails if one hangs."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def start(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
        job = Job(target, args, kwargs)
        self.jobs.append(job)
        job.thread.start()
        return job

    def join(self, timeout: float = 60) -> list[Any]:
        for job in self.jobs:
            job.thread.join(timeout)
        hung = [job.target for job in self.jobs if job.thread.is_alive()]
        errors = [job.error for job in self.jobs if job.error is not None]
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"another thread also raised: {other!r}")
            if hung:
                first.add_note(f"and {len(hung)} thread(s) still run: {hung}")
            raise first
        assert not hung, f"thread(s) still running after {timeout}s: {hung}"
        return [job.result for job in self.jobs]


@contextmanager
def threads(timeout: float = 60) -> Iterator[Threads]:
    """`with threads() as pool: pool.start(f)`: joined on the way out, exceptions re-raised.
    If the body itself fails, its error wins; the threads' errors are attached to it."""
    pool = Threads()
    try:
        yield pool
    except BaseException as exc:
        for job in pool.jobs:
            job.thread.join(timeout)
            if job.error is not None:
                exc.add_note(f"a thread raised: {job.error!r}")
        raise
    pool.join(timeout)


def run_in_threads(*work: Callable[[], Any], timeout: float = 60) -> list[Any]:
    """Run each callable in its own thread at once; their results in order. An exception in
    any fails the test."""
    pool = Threads()
    for target in work:
        pool.start(target)
    return pool.join(timeout)
