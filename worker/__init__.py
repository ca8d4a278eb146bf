"""Celery app, configuration, signals and command line. `celery -A worker worker` finds `app`."""

from worker import signals as _signals  # noqa: F401 - connects the process signals
from worker.app import create_app

app = create_app()

__all__ = ["app"]
