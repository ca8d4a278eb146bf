"""Process lifecycle: what each forked child must do before its first task."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from db.engine import dispose_after_fork


@worker_process_init.connect
def _reset_connections_in_child(**_: Any) -> None:
    # Pooled connections inherited from the parent must never be shared across fork.
    # (redis-py's pool notices the new pid and reconnects by itself.)
    dispose_after_fork()
