"""Celery app, configuration, signals and command line. `celery -A worker worker` finds `app`."""

import sys

from worker import signals as _signals  # noqa: F401 - connects the process signals
from worker.app import create_app
from worker.settings import ConfigError, load_settings, use_settings

try:
    # Every setting of every package is read and validated now, once for the process, so a bad
    # variable stops the worker (and beat, and the command line) before it takes a message.
    use_settings(load_settings())
    app = create_app()
except ConfigError as exc:  # it names the variable: one line, no traceback
    print(f"journey-worker: {exc}", file=sys.stderr)
    sys.exit(2)

__all__ = ["app"]
