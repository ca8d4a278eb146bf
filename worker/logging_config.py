"""Log format: Celery's human lines by default, one JSON object per record with LOG_FORMAT=json.

Celery still sets up the handlers (level, --logfile, stdout redirection); the signal handlers in
worker/signals.py only swap the formatter on them, in the worker, beat and their children.
The per-batch and per-step lines (tasks/steps.py) pass their fields as `extra=`; in JSON they
become keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from worker.settings import LoggingSettings, current_settings

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _current_task() -> tuple[str | None, str | None]:
    try:
        from celery._state import get_current_task
    except ImportError:  # pragma: no cover - Celery is a dependency
        return None, None
    task = get_current_task()
    if task is None or task.request is None:
        return None, None
    return task.request.id, task.name


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, process, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_") and key not in payload:
                payload[key] = value
        if "task_id" not in payload:
            task_id, task_name = _current_task()
            if task_id:
                payload["task_id"] = task_id
                payload["task_name"] = task_name
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc_info"] = record.exc_text
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def use_json(loggers: Iterable[logging.Logger]) -> None:
    """Give every handler of these loggers the JSON formatter."""
    formatter = JsonFormatter()
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(formatter)


def apply(logger: logging.Logger, settings: LoggingSettings | None = None) -> bool:
    """After Celery configured `logger`: switch it (and Celery's own helpers) to JSON if asked
    (LOG_FORMAT=json; `settings` default: the process's)."""
    settings = settings if settings is not None else current_settings().logging
    if settings.log_format != "json":
        return False
    from celery.utils.log import get_multiprocessing_logger

    use_json([logger, logging.getLogger("celery.task"), get_multiprocessing_logger()])
    return True
