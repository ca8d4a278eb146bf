"""The one task base class: late acks, an explicit retry policy, publishing only after the task's
writes committed (tasks/engine.py returns followups for that), and failures recorded where an
operator will see them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery, Task
from sqlalchemy.exc import IntegrityError, OperationalError

from db import dispatch, failures
from db.engine import transaction
from tasks import metrics
from tasks.arguments import loggable_ids
from tasks.engine import Followup
from tasks.errors import BadMessage, PermanentError, TransientError
from tasks.lanes import lane_for
from tasks.settings import EngineSettings, engine_settings

log = logging.getLogger("journey_worker.tasks")

# Faults of the moment: a connection dropped, a lock or statement timeout, a remote service
# down, a concurrent writer that won a unique race. Everything else is a bug or bad input.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    OperationalError,
    IntegrityError,
    SoftTimeLimitExceeded,
)


class JourneyTask(Task):
    abstract = True
    acks_late = True
    autoretry_for = TRANSIENT_ERRORS
    dont_autoretry_for = (PermanentError,)
    # TASK_MAX_RETRIES and TASK_RETRY_BACKOFF_MAX_SECONDS: create_app sets both on each task of
    # its app (RetryPolicy, below); these are their defaults, never read from the environment.
    max_retries = EngineSettings.model_fields["max_retries"].default
    retry_backoff = 2
    # Kept far below the Redis broker's visibility timeout (1 h): a retry held by a worker for
    # longer would be delivered a second time.
    retry_backoff_max = EngineSettings.model_fields["retry_backoff_max"].default
    retry_jitter = True
    ignore_result = True

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        metrics.RETRIES.labels(self.name).inc()
        log.warning(
            "task retry task=%s task_id=%s ids=%s error=%s: %s",
            self.name,
            task_id,
            loggable_ids(kwargs or {}),
            type(exc).__name__,
            exc,
        )

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """A message that will not be retried again: dead-letter it and fail its contact."""
        kwargs = dict(kwargs or {})
        if isinstance(exc, PermanentError):
            reason = exc.reason
        else:
            reason = f"retries_exhausted: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        metrics.FAILURES.labels(self.name).inc()
        log.error(
            "task failed for good task=%s task_id=%s ids=%s reason=%s",
            self.name,
            task_id,
            loggable_ids(kwargs),
            reason,
        )
        try:
            self.record_failure(task_id, kwargs, reason, exc)
        except Exception:
            log.exception("could not record the failure of task %s (%s)", self.name, task_id)

    def record_failure(
        self, task_id: str, kwargs: dict[str, Any], reason: str, exc: BaseException
    ) -> None:
        tenant_id = _as_uuid(kwargs.get("tenant_id"))
        steps = _named_steps(kwargs)
        message_ids = [
            m
            for m in (
                _as_uuid(v) for v in [kwargs.get("message_id"), *_list(kwargs, "message_ids")]
            )
            if m is not None
        ]
        with transaction() as session:
            failures.record_task_failure(
                session,
                task_name=self.name,
                task_id=task_id,
                tenant_id=str(kwargs.get("tenant_id"))[:64] if "tenant_id" in kwargs else None,
                journey_contact_id=str(steps[0][0]) if len(steps) == 1 else None,
                kwargs=_json_safe(kwargs),
                error=reason,
            )
            # A malformed message says nothing about the contacts' state: leave them be.
            if tenant_id and steps and not isinstance(exc, BadMessage):
                failures.fail_open_steps(session, tenant_id, steps, reason)
            if tenant_id and message_ids:
                failures.fail_queued_messages(session, tenant_id, message_ids, reason)


class RetryPolicy:
    """A Celery task annotation (`task_annotations=[RetryPolicy(settings)]`) that gives every
    JourneyTask of an app the settings' retry limits.

    Celery reads them from the task's class, and autoretry captures retry_backoff_max when the
    task is bound to the app; annotations are applied at that moment, just before, so the
    settings take effect without being read when this module is imported.
    """

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings

    def annotate(self, task: type[Task] | Task) -> dict[str, int] | None:
        task_class = task if isinstance(task, type) else type(task)
        if not issubclass(task_class, JourneyTask):
            return None  # Celery's own tasks keep their policies
        return {
            "max_retries": self.settings.max_retries,
            "retry_backoff_max": self.settings.retry_backoff_max,
        }


def publish(app: Celery, followups: Iterable[Followup]) -> int:
    """Publish after commit, each message to its lane (tasks/lanes.py); returns how many went.

    The app's publish retry policy rides out a broker restart of PUBLISH_RETRY_SECONDS. What
    still cannot be published loses nothing: the steps are marked unpublished, so the
    dispatcher publishes them at its next run instead of waiting for a grace period."""
    followups = list(followups)
    if not followups:
        return 0
    bulk_batch_min = engine_settings().bulk_batch_min
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for followup in followups:
                queue = followup.queue or lane_for(
                    followup.task_name, followup.kwargs, bulk_batch_min
                )
                app.send_task(
                    followup.task_name, kwargs=followup.kwargs, producer=producer, queue=queue
                )
                sent += 1
    except Exception as exc:
        unsent = followups[sent:]
        log.warning(
            "publish after commit failed (%d of %d messages); their steps are due for the "
            "dispatcher at once: %s: %s",
            len(unsent),
            len(followups),
            type(exc).__name__,
            exc,
        )
        _mark_unpublished(unsent)
    return sent


def _mark_unpublished(followups: Iterable[Followup]) -> None:
    by_tenant: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {}
    for followup in followups:
        tenant_id = _as_uuid(followup.kwargs.get("tenant_id"))
        steps = [(jc, step) for jc, step in _named_steps(followup.kwargs) if step is not None]
        if tenant_id is not None and steps:
            by_tenant.setdefault(tenant_id, []).extend(steps)  # type: ignore[arg-type]
    if not by_tenant:
        return  # deliveries: still QUEUED, the dispatcher's stale sweep brings them back
    try:
        with transaction() as session:
            for tenant_id, steps in by_tenant.items():
                dispatch.mark_unpublished(session, tenant_id, steps)
    except Exception:
        # The database is away too: the steps are still due after their grace period.
        log.exception("could not mark unpublished steps; the grace period will bring them back")


def _as_uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _list(kwargs: dict[str, Any], name: str) -> list[Any]:
    value = kwargs.get(name)
    return value if isinstance(value, list) else []


def _named_steps(kwargs: dict[str, Any]) -> list[tuple[uuid.UUID, int | None]]:
    """The journey contacts (and their steps) a step task was about, read leniently: the
    message may be the malformed one."""
    single = _as_uuid(kwargs.get("journey_contact_id"))
    if single is not None:
        step = kwargs.get("step")
        return [(single, step if isinstance(step, int) and not isinstance(step, bool) else None)]
    steps: list[tuple[uuid.UUID, int | None]] = []
    for pair in _list(kwargs, "journey_contacts"):
        if isinstance(pair, list) and len(pair) == 2:
            journey_contact_id = _as_uuid(pair[0])
            if journey_contact_id is not None and isinstance(pair[1], int):
                steps.append((journey_contact_id, pair[1]))
    return steps


def _json_safe(kwargs: dict[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for key, value in list(kwargs.items())[:20]:
        if isinstance(value, str | int | float | bool) or value is None:
            safe[str(key)] = value if not isinstance(value, str) else value[:256]
        elif isinstance(value, list):
            safe[str(key)] = [str(v)[:64] for v in value[:50]]
        else:
            safe[str(key)] = repr(value)[:256]
    return safe
