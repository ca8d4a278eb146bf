"""The worker's Prometheus endpoint, correct under prefork.

With METRICS_PORT set, the worker's parent process, before it forks its pool:

1. points PROMETHEUS_MULTIPROC_DIR at a directory only this worker uses (the one the operator
   set, emptied of old *.db files, or a fresh temporary directory removed at shutdown), and
   switches prometheus-client to multiprocess values. The `celery` command has imported
   prometheus-client already (Flower's plugin does), so the environment variable alone would
   come too late; tasks/metrics.py creates its metrics on first use, in the children, after
   this switch.
2. serves, on METRICS_ADDRESS:METRICS_PORT (default address 0.0.0.0), a registry holding a
   MultiProcessCollector (the children's counters and histograms, summed) and the cache's
   hit and miss counters, read from Redis at scrape time.

Children that exit are marked dead (worker_process_shutdown), which matters for live gauges;
counters and histograms of dead children keep counting in the sums, as they should.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.settings import MetricsSettings

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("journey_worker.metrics")

CACHE_COUNTERS = ("hits", "misses", "fills", "invalidations", "stale_fill_refusals")


def enable_multiprocess(directory: str | None) -> tuple[Path, bool]:
    """Point prometheus-client at an empty per-worker directory; (path, whether we made it)."""
    from prometheus_client import values

    from tasks import metrics

    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        owned = False
    else:
        path = Path(tempfile.mkdtemp(prefix="journey-worker-metrics-"))
        owned = True
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus-client picks the value class once, at import, from this variable.
        values.ValueClass = values.get_value_class()
    if metrics.created():
        log.warning(
            "metrics were created before multiprocess mode was enabled; "
            "this process's own values will be missing from /metrics"
        )
    return path, owned


class CacheStatsCollector:
    """The Redis cache's counters, read at scrape time.

    They live in Redis, shared by every process on the same CACHE_KEY_PREFIX, so every worker
    host reports the same totals: aggregate them with max(), not sum(). Nothing is reported
    while Redis is unreachable (rather than zeros that look like a counter reset), nor for the
    in-process cache, whose counters live in each child.
    """

    def __init__(self) -> None:
        self._cache: Any = None
        self._lock = threading.Lock()

    def _get_cache(self) -> Any:
        # Its own client, never the process's get_cache(): the parent forks children while
        # this thread may hold that cache's locks.
        with self._lock:
            if self._cache is None:
                from cache import build_cache, cache_settings

                try:
                    settings = cache_settings()
                except ValueError as exc:  # the children report it where it matters
                    log.warning("cache metrics disabled: %s", exc)
                    self._cache = False
                else:
                    self._cache = False if settings.embedded else build_cache(settings)
            return self._cache

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        cache = self._get_cache()
        if not cache or cache.circuit_open:
            return
        stats = cache.stats()
        if cache.circuit_open:
            return
        for counter in CACHE_COUNTERS:
            family = CounterMetricFamily(
                f"journey_worker_cache_{counter}",
                f"Journey cache {counter.replace('_', ' ')} by group, shared by every process "
                "on this CACHE_KEY_PREFIX (aggregate with max, not sum).",
                labels=["group"],
            )
            for group, values in stats.items():
                family.add_metric([group], float(values.get(counter, 0)))
            yield family

    def describe(self) -> list[Metric]:
        # No describe-time scrape of Redis when the collector is registered.
        return []


def build_registry(directory: Path, *, cache_stats: bool = True) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    if cache_stats:
        registry.register(CacheStatsCollector())  # type: ignore[arg-type]
    return registry


@dataclass
class MetricsServer:
    server: Any
    thread: threading.Thread
    directory: Path
    owned_directory: bool
    address: str
    port: int

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.owned_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


_server: MetricsServer | None = None


def start(settings: MetricsSettings) -> MetricsServer | None:
    """In the worker's parent, before the pool forks. SystemExit(2) if the port is taken."""
    global _server
    if not settings.enabled or _server is not None:
        return _server
    assert settings.port is not None
    from prometheus_client import start_http_server

    directory, owned = enable_multiprocess(settings.directory)
    try:
        server, thread = start_http_server(
            settings.port, addr=settings.address, registry=build_registry(directory)
        )
    except OSError as exc:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
        log.critical(
            "journey-worker: refusing to start: METRICS_PORT: cannot listen on %s:%s: %s",
            settings.address,
            settings.port,
            exc.strerror or exc,
        )
        raise SystemExit(2) from None
    _server = MetricsServer(server, thread, directory, owned, settings.address, settings.port)
    log.info(
        "metrics on http://%s:%s/metrics (multiprocess directory %s)",
        settings.address,
        settings.port,
        directory,
    )
    return _server


def stop() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None


def mark_process_dead(pid: int) -> None:
    """A child is exiting: drop its live-gauge files (counters stay in the sums)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)
