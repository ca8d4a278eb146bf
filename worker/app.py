"""The Celery application. Every delivery setting here is a decision; the README says why."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from kombu import Queue

from tasks import names
from tasks.base import RetryPolicy
from tasks.settings import EngineSettings, engine_settings
from worker.settings import WorkerSettings, current_settings, embedded_broker_options

# Every module that defines tasks; the worker imports them at start.
TASK_MODULES = (
    "tasks.steps",
    "tasks.enrollment",
    "tasks.contacts",
    "tasks.events",
    "tasks.deliveries",
    "tasks.dispatch",
    "tasks.retention",
    "tasks.stats",
    "tasks.maintenance",
    "tasks.inbound",
    "tasks.receipts",
    "tasks.contact_events",
)


def publish_retry_policy(seconds: float) -> dict[str, float]:
    """kombu's retry policy for publishing: at once, then 1 s more each time up to 5 s apart,
    as many times as it takes to cover `seconds`."""
    retries, waited, step = 0, 0.0, 1.0
    while waited < seconds:
        waited += min(retries * step, 5.0)
        retries += 1
    return {"max_retries": retries, "interval_start": 0, "interval_step": step, "interval_max": 5}


def create_app(
    settings: WorkerSettings | None = None, engine: EngineSettings | None = None
) -> Celery:
    """The app for these sections; by default the process's (worker.settings.use_settings)."""
    settings = settings if settings is not None else current_settings().worker
    engine = engine if engine is not None else engine_settings()
    app = Celery("journey_worker", broker=settings.broker, include=list(TASK_MODULES))
    transport_options: dict[str, object] = {}
    if settings.embedded_broker:
        transport_options.update(embedded_broker_options())
    if settings.broker.startswith(("amqp", "amqps", "pyamqp")):
        # Publisher confirms: a publish returns once RabbitMQ has the message, so one lost to a
        # dropped connection fails (and is retried, or its step marked unpublished) instead of
        # vanishing into a socket buffer and waiting for the late-step sweep.
        transport_options["confirm_publish"] = True
    if settings.broker.startswith(("redis", "rediss")):
        # Node tasks are short and waits live in PostgreSQL, so an hour is far beyond any task;
        # the longest retry backoff (300 s by default) stays well under it.
        transport_options["visibility_timeout"] = settings.visibility_timeout
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_default_queue=names.DEFAULT_QUEUE,
        # The lanes, all consumed by default (tasks/lanes.py): the dispatcher's own, everyone's
        # journeys, and blasts' large batches.
        task_queues=[Queue(name, routing_key=name) for name in names.WORKER_QUEUES],
        task_routes={names.DISPATCH_DUE: {"queue": names.DISPATCH_QUEUE}},
        task_create_missing_queues=True,
        # Acknowledge after the task's transaction committed; the engine is idempotent per step.
        task_acks_late=True,
        # A child killed mid-task (OOM, SIGKILL): its message is acknowledged, not requeued,
        # so a node that kills its process cannot loop at full speed. Nothing is lost: the
        # journey contact row still says the step is due, and the dispatcher re-publishes it
        # after the grace period, failing the contact as 'stalled' after a few tries.
        task_reject_on_worker_lost=False,
        # One reserved message per child: fair dispatch, and no pile of unacked messages
        # stranded with a dead child.
        worker_prefetch_multiplier=1,
        # A task running when the broker connection drops keeps running: its write is
        # idempotent per step, and a task that committed must live to publish its next steps
        # (the publish retries through the outage, below). Its late ack is lost with the
        # connection, so the broker delivers the message again: a duplicate, which writes and
        # publishes nothing.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Ride out a broker restart: a publish retries for PUBLISH_RETRY_SECONDS before the
        # step is marked unpublished for the dispatcher (Celery's default gives up in a second).
        task_publish_retry=True,
        task_publish_retry_policy=publish_retry_policy(settings.publish_retry_seconds),
        # Celery reads a task's retry limits from its class, once, when the task is bound to
        # this app: the annotation sets them there from the settings (tasks/base.py).
        task_annotations=[RetryPolicy(engine)],
        task_soft_time_limit=settings.soft_time_limit,
        task_time_limit=settings.time_limit,
        # Off unless WORKER_SEND_TASK_EVENTS: they cost a quarter or more of a no-op task's
        # throughput, and Flower turns worker events on at run time while it watches.
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        # Celery's default. At 4, Flower hangs for good: each of its concurrent inspect
        # threads holds one pooled connection while it acquires a second for its producer,
        # so four of them exhaust the pool (events stop too). Connections open lazily, so
        # a prefork child still uses one or two.
        broker_pool_limit=10,
        worker_hijack_root_logger=False,
        beat_schedule={
            "dispatch-due-steps": {
                "task": names.DISPATCH_DUE,
                "schedule": timedelta(seconds=settings.dispatch_interval),
                # A dispatch that waited longer than its interval is superseded by the next.
                "options": {"expires": max(settings.dispatch_interval * 5, 10)},
            },
            # Retention: hourly, so each run deletes a bounded slice of a day's growth.
            "purge-old-executions": {
                "task": names.PURGE_EXECUTIONS,
                "schedule": timedelta(hours=1),
                "options": {"expires": 1800},
            },
        },
    )
    if settings.stats_refresh_interval > 0:
        app.conf.beat_schedule["refresh-stats"] = {
            "task": names.REFRESH_STATS,
            "schedule": timedelta(seconds=settings.stats_refresh_interval),
            # A refresh still queued when the next is due is superseded by it.
            "options": {"expires": settings.stats_refresh_interval},
        }
    if settings.maintenance_interval > 0:
        app.conf.beat_schedule["maintain-tables"] = {
            "task": names.MAINTAIN_TABLES,
            "schedule": timedelta(seconds=settings.maintenance_interval),
            "options": {"expires": settings.maintenance_interval},
        }
    if settings.concurrency is not None:
        # Each child holds its own database pool: worker/budget.py checks the total at start.
        app.conf.worker_concurrency = settings.concurrency
    return app
