"""Process lifecycle: what each forked child must do before its first task, and what the
worker's parent checks and starts before it forks them."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_after_setup,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from db.engine import dispose_after_fork
from tasks import circuit_breaker, http, schemas
from worker import budget, logging_config, metrics_server
from worker.settings import current_settings


@worker_process_init.connect
def _reset_connections_in_child(**_: Any) -> None:
    # Pooled connections inherited from the parent must never be shared across fork.
    # (redis-py's pool notices the new pid and reconnects by itself.)
    dispose_after_fork()
    # The same for pooled HTTP connections; each child also keeps its own circuit breakers.
    http.reset_after_fork()
    circuit_breaker.reset_after_fork()


@after_setup_logger.connect
def _format_logs(logger: logging.Logger, **_: Any) -> None:
    # Celery configured the handlers (level, --logfile); LOG_FORMAT=json swaps the formatter.
    logging_config.apply(logger)


@after_setup_task_logger.connect
def _format_task_logs(logger: logging.Logger, **_: Any) -> None:
    logging_config.apply(logger)


def _is_prefork(pool_cls: Any) -> bool:
    from celery.concurrency.prefork import TaskPool

    return isinstance(pool_cls, type) and issubclass(pool_cls, TaskPool)


@celeryd_after_setup.connect
def _before_the_pool_forks(instance: Any, **_: Any) -> None:
    # The worker's parent, `celery worker` only (not beat, not Flower): logging is set up and
    # the concurrency resolved (-c, WORKER_CONCURRENCY or 'auto'), and neither has the pool
    # forked nor has a message been consumed. SystemExit here ends the worker with its code.
    concurrency = int(instance.concurrency)
    if getattr(instance, "autoscale", None):
        # --autoscale=max,min: the budget must hold at the maximum.
        concurrency = max(concurrency, int(instance.max_concurrency))
    # The settings were validated when the worker package was imported (worker/__init__.py).
    settings = current_settings()
    _require_task_schemas(instance.app)
    budget.enforce(
        concurrency,
        _is_prefork(instance.pool_cls),
        settings.db,
        settings.budget.connection_budget,
    )
    metrics_server.start(settings.metrics)
    freeze_startup_objects()


def freeze_startup_objects() -> None:
    """Move every object alive now (the imported modules, the app: some 140,000) out of the
    garbage collector's reach, right before the pool forks, as the gc module's documentation
    advises for pre-fork servers. Children no longer copy the pages that collections would
    touch; and the parent's shutdown no longer ends in collections over all of them, one to two
    seconds of CPU on an idle machine (measured with py-spy: `gc_collect_main` at interpreter
    exit), which is what a warm shutdown's time grows with on a loaded one."""
    gc.freeze()


def _require_task_schemas(app: Any) -> None:
    # Each task checks its arguments against its published schema: one without a schema would
    # fail every message, so the worker refuses to start instead.
    try:
        schemas.require_task_schemas(sorted(n for n in app.tasks if n.startswith("journeys.")))
    except schemas.SchemaMissing as exc:
        logging.getLogger("journey_worker").critical("journey-worker: %s", exc)
        raise SystemExit(2) from None


@worker_process_shutdown.connect
def _mark_child_dead(pid: int | None = None, **_: Any) -> None:
    metrics_server.mark_process_dead(pid or os.getpid())


@worker_shutdown.connect
def _stop_metrics(**_: Any) -> None:
    metrics_server.stop()
