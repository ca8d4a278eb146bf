"""Celery app, configuration, signals and command line. `celery -A worker worker` finds `app`."""

import sys

from worker import signals as _signals  # noqa: F401 - connects the process signals
from worker.app import create_app

try:
    # Every setting is read now, so a bad variable stops the worker before it takes a message.
    from cache.settings import CacheSettings
    from db.settings import DbSettings
    from tasks.settings import EngineSettings

    DbSettings.from_env()
    CacheSettings.from_env()
    EngineSettings.from_env()
    app = create_app()
except ValueError as exc:  # a ConfigError names the variable: one line, no traceback
    if not getattr(exc, "variable", None):
        raise
    print(f"journey-worker: {exc}", file=sys.stderr)
    sys.exit(2)

__all__ = ["app"]
