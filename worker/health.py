"""`journey-worker health`: is this deployment able to work? One line per check, fast.

Checks: database reachable, migrated to this code's head, the twelve performance indexes verified,
the cache's Redis answering PING, the broker accepting a connection. Three independent chains
(database -> migrations -> indexes, cache, broker) run in parallel daemon threads under one
deadline, so a probe finishes in bounded time even when a host black-holes packets; a check
still running at the deadline is a FAIL that says so.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, event

CHECKS = ("database", "migrations", "indexes", "cache", "broker")
DEFAULT_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self, width: int = 0) -> str:
        if self.ok:
            return f"ok   {self.name:<{width}}  {self.detail}"
        return f"FAIL {self.name}: {self.detail}"


def reason(exc: BaseException) -> str:
    """The first line of an error, driver wrappers unwrapped (no SQL, no traceback)."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return lines[0] if lines else type(inner).__name__


def redacted(url: str) -> str:
    """scheme://host:port/path, never the user or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("://", 1)[0] + "://..."
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _probe_connect_args(engine: Engine, timeout: float) -> None:
    """The probe's own connect timeout and application name, over build_engine's defaults."""

    @event.listens_for(engine, "do_connect")
    def _probe(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["connect_timeout"] = max(1, round(timeout))  # libpq counts whole seconds
        cparams["application_name"] = "journey-worker-health"


# The chains. Each yields its results in order; a later check that cannot run says why.


def _database_chain(environ: Mapping[str, str], timeout: float) -> Iterator[CheckResult]:
    from sqlalchemy import text

    from db import migrate
    from db.engine import build_engine
    from db.settings import DbSettings
    from db.verify import verify_indexes

    skipped = ("migrations", "indexes")
    try:
        settings = DbSettings.from_env(environ)
        millis = max(1, int(timeout * 1000))
        # A probe's own small engine: short statement and lock timeouts, nothing pooled.
        engine = build_engine(
            settings.model_copy(
                update={
                    "pool_size": 1,
                    "max_overflow": 0,
                    "statement_timeout_ms": millis,
                    "lock_timeout_ms": millis,
                }
            )
        )
        if not settings.is_sqlite:
            _probe_connect_args(engine, timeout)
    except Exception as exc:
        yield CheckResult("database", False, reason(exc))
        for name in skipped:
            yield CheckResult(name, False, "not checked: database not configured")
        return
    try:
        try:
            with engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    version = connection.execute(text("SHOW server_version")).scalar_one()
                    url = settings.url
                    at = f"{url.host or 'local socket'}:{url.port or 5432}/{url.database}"
                    where = f"PostgreSQL {version.split()[0]} at {at}"
                else:
                    version = connection.execute(text("SELECT sqlite_version()")).scalar_one()
                    where = f"SQLite {version} at {settings.url.database} (embedded)"
        except Exception as exc:
            yield CheckResult("database", False, f"unreachable: {reason(exc)}")
            for name in skipped:
                yield CheckResult(name, False, "not checked: database unreachable")
            return
        yield CheckResult("database", True, where)

        try:
            current, head = migrate.current_revision(engine), migrate.head_revision()
        except Exception as exc:
            yield CheckResult("migrations", False, reason(exc))
        else:
            if current == head:
                yield CheckResult("migrations", True, f"at head {head}")
            elif current is None:
                yield CheckResult(
                    "migrations", False, f"empty database: run `journey-worker db upgrade` ({head})"
                )
            elif current in migrate.known_revisions():
                yield CheckResult(
                    "migrations",
                    False,
                    f"at {current}, behind head {head}: run `journey-worker db upgrade`",
                )
            else:
                yield CheckResult(
                    "migrations", False, f"at {current}, unknown to this code (newer code ran)"
                )

        try:
            problems = verify_indexes(engine)
        except Exception as exc:
            yield CheckResult("indexes", False, reason(exc))
        else:
            from db.indexes import PERFORMANCE_INDEXES

            total = len(PERFORMANCE_INDEXES)
            if problems:
                listed = ", ".join(f"{p.name} {p.state.value}" for p in problems)
                yield CheckResult(
                    "indexes",
                    False,
                    f"{len(problems)} of {total} need attention: {listed} "
                    "(`journey-worker db verify-indexes --repair`)",
                )
            else:
                yield CheckResult("indexes", True, f"{total} of {total} verified")
    finally:
        engine.dispose()


def _cache_chain(environ: Mapping[str, str], timeout: float) -> Iterator[CheckResult]:
    import redis

    from cache.settings import CacheSettings

    try:
        settings = CacheSettings.from_env(environ)
    except Exception as exc:
        yield CheckResult("cache", False, reason(exc))
        return
    url = settings.redis_url
    if url is None:
        yield CheckResult("cache", True, "in-process (embedded)")
        return
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        started = time.monotonic()
        client.ping()
        millis = (time.monotonic() - started) * 1000
        where = f"Redis at {redacted(url)}"
        yield CheckResult("cache", True, f"{where} (PING {millis:.1f} ms)")
    except Exception as exc:
        yield CheckResult("cache", False, f"Redis at {redacted(url)}: {reason(exc)}")
    finally:
        client.close()


def _broker_chain(environ: Mapping[str, str], timeout: float) -> Iterator[CheckResult]:
    from kombu import Connection

    from worker.settings import WorkerSettings

    try:
        settings = WorkerSettings.from_env(environ)
    except Exception as exc:
        yield CheckResult("broker", False, reason(exc))
        return
    if settings.embedded_broker:
        yield CheckResult("broker", True, "filesystem (embedded)")
        return
    where = redacted(settings.broker)
    connection = Connection(
        settings.broker,
        connect_timeout=timeout,
        # The Redis transport reads its socket timeouts from here, not from connect_timeout.
        transport_options={"socket_connect_timeout": timeout, "socket_timeout": timeout},
    )
    try:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=timeout
        )
        yield CheckResult("broker", True, where)
    except Exception as exc:
        yield CheckResult("broker", False, f"{where}: {reason(exc)}")
    finally:
        connection.release()


Chain = Callable[[Mapping[str, str], float], Iterator[CheckResult]]
CHAINS: tuple[tuple[tuple[str, ...], Chain], ...] = (
    (("database", "migrations", "indexes"), _database_chain),
    (("cache",), _cache_chain),
    (("broker",), _broker_chain),
)


def run_checks(
    environ: Mapping[str, str] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    deadline: float | None = None,
) -> list[CheckResult]:
    """Every check's result, in CHECKS order, within `deadline` seconds (default 2 x timeout:
    room for a connect and one statement, and with the default 3 s a probe answers in ~10 s
    counting the interpreter's start)."""
    env = dict(os.environ if environ is None else environ)
    budget = deadline if deadline is not None else timeout * 2
    results: dict[str, CheckResult] = {}
    lock = threading.Lock()

    def run(chain: Chain, names: tuple[str, ...]) -> None:
        try:
            for result in chain(env, timeout):
                with lock:
                    results[result.name] = result
        except Exception as exc:  # a bug in a check must still produce its line
            with lock:
                for name in names:
                    results.setdefault(name, CheckResult(name, False, f"check crashed: {exc!r}"))

    # Daemon threads: one stuck in a socket call must not keep the probe process alive.
    threads = [
        threading.Thread(target=run, args=(chain, names), daemon=True, name=f"health-{names[0]}")
        for names, chain in CHAINS
    ]
    ends = time.monotonic() + budget
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, ends - time.monotonic()))
    with lock:
        return [
            results.get(name) or CheckResult(name, False, f"no answer within {budget:g}s")
            for name in CHECKS
        ]
