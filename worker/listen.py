"""The invalidation listener: PostgreSQL NOTIFY (migration 0003's triggers) -> the Redis cache.

Whoever commits a change to tenants, journeys or journey_nodes (upstream, psql, the worker),
PostgreSQL notifies INVALIDATION_CHANNEL once the transaction commits. This process LISTENs on a
dedicated autocommit connection and drops the matching cache entries, so workers stop using a
stale node within milliseconds instead of after the TTL, even when upstream forgets to send
`journeys.journey_updated`.

NOTIFY is not durable: notifications sent while no session listens are gone. So every time the
listener (re)connects it invalidates conservatively (`resync`), after LISTEN succeeded, so
nothing can fall between the sweep and the first notification.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

from cache import JourneyCache, get_cache
from db.migrate import INVALIDATION_CHANNEL

log = logging.getLogger(__name__)

APPLICATION_NAME = "journey-worker-listen"
POLL_SECONDS = 1.0
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0
REPORT_SECONDS = 60.0


def conninfo_from_url(url: URL, *, application_name: str = APPLICATION_NAME) -> str:
    """A libpq conninfo for a SQLAlchemy PostgreSQL URL (driver name dropped, query kept).

    make_conninfo quotes every value, so passwords with URL-special characters survive.
    """
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"LISTEN needs PostgreSQL, not {url.get_backend_name()}")
    params: dict[str, Any] = {
        "connect_timeout": 5,
        "application_name": application_name,
        # An idle LISTEN connection sends nothing, so without keepalives a server that vanished
        # (host lost, NAT mapping dropped) would go unnoticed and every later change be missed.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    # Options in the URL's query (sslmode, host=/socket/dir, ...) win over the defaults above.
    for key, option in url.query.items():
        params[key] = option if isinstance(option, str) else option[-1]
    for key, value in (
        ("host", url.host),
        ("port", url.port),
        ("dbname", url.database),
        ("user", url.username),
        ("password", url.password),
    ):
        if value is not None and value != "":
            params[key] = value
    return make_conninfo("", **params)


@dataclass(frozen=True)
class Invalidation:
    kind: str  # "journey" or "tenant"
    tenant_id: str
    journey_id: str | None


def _is_id(value: object) -> bool:
    # The cache refuses empty ids and braces (its cluster hash tag); refuse here, with a reason.
    return isinstance(value, str) and bool(value) and "{" not in value and "}" not in value


def parse_payload(payload: str) -> Invalidation:
    """The invalidation a trigger's payload asks for; ValueError saying why it is unusable."""
    try:
        data = json.loads(payload)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    kind, tenant_id, journey_id = data.get("kind"), data.get("tenant_id"), data.get("journey_id")
    if not _is_id(tenant_id):
        raise ValueError("tenant_id missing or not an id")
    assert isinstance(tenant_id, str)
    if kind == "tenant":
        return Invalidation("tenant", tenant_id, None)
    if kind == "journey":
        if not _is_id(journey_id):
            raise ValueError("journey_id missing or not an id")
        assert isinstance(journey_id, str)
        return Invalidation("journey", tenant_id, journey_id)
    raise ValueError(f"unknown kind {kind!r}")


@dataclass
class ListenerStats:
    """Counters since start; `failed` are invalidations Redis did not confirm."""

    journeys: int = 0
    tenants: int = 0
    ignored: int = 0
    failed: int = 0
    resyncs: int = 0

    def since(self, earlier: ListenerStats) -> ListenerStats:
        return ListenerStats(
            **{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)}
        )

    def line(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class Listener:
    """LISTEN on one connection, invalidate the cache per notification, reconnect with backoff.

    run(stop) blocks until stop is set; handle(payload) applies one notification. `listening`
    is set while LISTEN is active and the (re)connect resync is done (tests wait on it).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        cache: JourneyCache | None = None,
        channel: str = INVALIDATION_CHANNEL,
        poll_seconds: float = POLL_SECONDS,
        backoff_initial: float = BACKOFF_INITIAL_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        report_seconds: float = REPORT_SECONDS,
        connect: Callable[[str], psycopg.Connection[Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.poll_seconds = poll_seconds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.report_seconds = report_seconds
        self.listening = threading.Event()
        self.stats = ListenerStats()
        self.connections = 0
        self.backend_pid: int | None = None
        self._cache = cache
        self._connect = connect or (lambda info: psycopg.connect(info, autocommit=True))
        self._clock = clock
        self._reported = ListenerStats()
        self._next_report = clock() + report_seconds
        # A lost invalidation (Redis did not confirm) or a failed sweep: sweep again later.
        self._resync_pending = False
        self._resync_failures = 0
        self._next_resync = 0.0
        self._stop = threading.Event()

    @property
    def cache(self) -> JourneyCache:
        # Looked up on each use when none was given, so use_cache() in tests takes effect.
        return self._cache if self._cache is not None else get_cache()

    def backoff(self, attempt: int) -> float:
        """Seconds before reconnect attempt `attempt` (0-based): doubling, capped."""
        return float(min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempt, 30)))

    # One notification.

    def handle(self, payload: str) -> bool:
        """Apply one notification's payload; False if it was ignored or Redis did not confirm."""
        try:
            target = parse_payload(payload)
        except ValueError as exc:
            self.stats.ignored += 1
            log.warning("ignoring notification on %s (%s): %.200r", self.channel, exc, payload)
            return False
        if target.journey_id is not None:
            ok = self.cache.invalidate_journey(target.tenant_id, target.journey_id)
            self.stats.journeys += 1
            what = f"journey {target.journey_id} of tenant {target.tenant_id}"
        else:
            ok = self.cache.invalidate_tenant(target.tenant_id)
            self.stats.tenants += 1
            what = f"tenant {target.tenant_id}"
        if not ok:
            # The cache already warned; a later sweep makes up for it once Redis answers.
            self.stats.failed += 1
            self._schedule_resync()
            return False
        log.debug("invalidated %s", what)
        return True

    # The loop.

    def run(self, stop: threading.Event) -> None:
        """Listen until `stop` is set; every connection problem ends in a reconnect with backoff."""
        self._stop = stop
        attempt = 0
        while not stop.is_set():
            started = self._clock()
            try:
                self._session(stop)
            except psycopg.Error as exc:
                self.listening.clear()
                # A connection that lived a while earns a fast retry; a flapping one backs off.
                if self.backend_pid is not None and self._clock() - started >= self.backoff_max:
                    attempt = 0
                delay = self.backoff(attempt)
                attempt += 1
                log.warning(
                    "invalidation listener: database connection failed (%s); reconnecting in %.1fs",
                    _one_line(exc),
                    delay,
                )
                stop.wait(delay)
        self.listening.clear()
        log.info("invalidation listener stopped (%s)", self.stats.line())

    def _session(self, stop: threading.Event) -> None:
        self.backend_pid = None
        conn = self._connect(self.conninfo)
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.backend_pid = conn.info.backend_pid
            self.connections += 1
            log.info(
                "listening on channel %s (backend pid %s, connection %d)",
                self.channel,
                self.backend_pid,
                self.connections,
            )
            # Changes committed while nobody listened (before the first start, or while the
            # database was away) were never notified: assume anything may be stale.
            self._resync(conn)
            self.listening.set()
            while not stop.is_set():
                for notify in conn.notifies(timeout=self.poll_seconds):
                    self._apply(notify.payload)
                    if stop.is_set():
                        break
                self._tick(conn)
        finally:
            self.listening.clear()
            conn.close()

    def _apply(self, payload: str) -> None:
        try:
            self.handle(payload)
        except Exception:
            # A bug must not stop invalidation for everyone; the sweep covers what was skipped.
            self.stats.failed += 1
            self._schedule_resync()
            log.exception("invalidation listener: could not apply %.200r", payload)

    def _tick(self, conn: psycopg.Connection[Any]) -> None:
        now = self._clock()
        if self._resync_pending and now >= self._next_resync:
            self._resync(conn)
        if now >= self._next_report:
            self._next_report = now + self.report_seconds
            delta = self.stats.since(self._reported)
            self._reported = replace(self.stats)
            log.info(
                "invalidation listener: last %gs %s; since start %s",
                self.report_seconds,
                delta.line(),
                self.stats.line(),
            )

    # Conservative invalidation after a gap.

    def _schedule_resync(self) -> None:
        if not self._resync_pending:
            self._resync_pending = True
            self._next_resync = self._clock() + self.backoff(self._resync_failures)

    def _resync(self, conn: psycopg.Connection[Any]) -> bool:
        """Invalidate everything that may have changed unnoticed; False if Redis failed.

        Notifications sent while nobody listened are lost, so after every (re)connect the whole
        cache goes: one SCAN and UNLINK sweep that also drops the fill tokens, so no reader
        that read before the sweep can put an old value back.
        """
        started = self._clock()
        self.stats.resyncs += 1
        ok, swept = bool(self.cache.invalidate_all()), "all entries"
        elapsed = self._clock() - started
        if self._stop.is_set() and not ok:
            log.info("invalidation listener: sweep interrupted by stop after %.2fs", elapsed)
            return False
        if ok:
            self._resync_pending, self._resync_failures = False, 0
            log.info("invalidation listener: invalidated %s (%.2fs)", swept, elapsed)
        else:
            self._resync_pending = True
            self._next_resync = self._clock() + self.backoff(self._resync_failures)
            self._resync_failures += 1
            log.warning(
                "invalidation listener: could not invalidate %s (Redis failed); retrying; "
                "until then cached entries may be stale for up to their TTL",
                swept,
            )
        return ok
