"""Prometheus metrics of the worker. Under prefork, prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR) aggregates the children; the worker command sets it up.

The metrics are created on first use, not at import. prometheus-client decides between
in-process and multiprocess values when a metric is constructed, and the `celery` command
imports prometheus-client (through Flower's plugin) long before our code runs; creating the
metrics lazily lets the worker switch multiprocess mode on (worker/metrics_server.py) after the
tasks are imported and before the pool forks. `metrics.STEPS` etc. work as before.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

    STEPS: Counter
    STEP_SECONDS: Histogram
    BATCH_SIZE: Histogram
    LOOP_DETECTIONS: Counter
    RETRIES: Counter
    FAILURES: Counter
    DISPATCHED: Counter
    MESSAGES: Counter
    QUEUE_DEPTH: Gauge
    DISPATCH_LAG: Histogram
    TENANT_STEPS: Counter
    SEND_RATE_DEFERRED: Counter
    WEBHOOK_REFUSALS: Counter
    SMS_PROVIDER_ATTEMPTS: Counter
    SMS_PROVIDER_CIRCUIT_OPENS: Counter
    SEND_POLICY: Counter
    TIMEZONE_FALLBACKS: Counter
    JOURNEY_EDITS: Counter

NAMES = (
    "STEPS",
    "STEP_SECONDS",
    "BATCH_SIZE",
    "LOOP_DETECTIONS",
    "RETRIES",
    "FAILURES",
    "DISPATCHED",
    "MESSAGES",
    "WEBHOOK_REFUSALS",
    "SMS_PROVIDER_ATTEMPTS",
    "SMS_PROVIDER_CIRCUIT_OPENS",
    "QUEUE_DEPTH",
    "DISPATCH_LAG",
    "TENANT_STEPS",
    "SEND_RATE_DEFERRED",
    "SEND_POLICY",
    "TIMEZONE_FALLBACKS",
    "JOURNEY_EDITS",
)

_lock = threading.Lock()
_metrics: dict[str, Any] | None = None


def _create() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "STEPS": Counter(
            "journey_worker_steps_total",
            "Node executions by node type and outcome.",
            ["node_type", "outcome", "status"],
        ),
        "STEP_SECONDS": Histogram(
            "journey_worker_step_seconds",
            "Time to execute one node for one batch of journey contacts (one for execute_node),"
            " statements and publishing included.",
            ["node_type"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ),
        "BATCH_SIZE": Histogram(
            "journey_worker_batch_contacts",
            "Journey contacts per executed batch.",
            ["node_type"],
            buckets=(1, 2, 5, 10, 25, 50, 100, 200, 500, 1000),
        ),
        "LOOP_DETECTIONS": Counter(
            "journey_worker_loop_detections_total", "Contacts failed as loops."
        ),
        "RETRIES": Counter(
            "journey_worker_task_retries_total", "Task retries by task name.", ["task"]
        ),
        "FAILURES": Counter(
            "journey_worker_task_failures_total",
            "Tasks that failed for good, by task name.",
            ["task"],
        ),
        "DISPATCHED": Counter(
            "journey_worker_dispatched_total",
            "Steps published by the due-step dispatcher.",
            ["kind"],
        ),
        "MESSAGES": Counter(
            "journey_worker_messages_total", "SMS deliveries by result.", ["status"]
        ),
        "QUEUE_DEPTH": Gauge(
            "journey_worker_queue_depth",
            "Messages waiting in each step queue, as the dispatcher last measured (-1: unknown).",
            ["queue"],
            multiprocess_mode="mostrecent",
        ),
        "DISPATCH_LAG": Histogram(
            "journey_worker_dispatch_lag_seconds",
            "How late the dispatcher published a scheduled step (now minus its due time).",
            buckets=(0.5, 1, 2, 3, 5, 10, 30, 60, 300, 900, 3600),
        ),
        "TENANT_STEPS": Counter(
            "journey_worker_tenant_steps_total",
            "Steps executed, by tenant (one series per tenant: mind the cardinality).",
            ["tenant_id"],
        ),
        "SEND_RATE_DEFERRED": Counter(
            "journey_worker_send_rate_deferred_total",
            "Messages a tenant's send rate deferred to a later delivery.",
        ),
        "WEBHOOK_REFUSALS": Counter(
            "journey_worker_webhook_refusals_total",
            "Webhook calls refused before connecting: the address is not public.",
            ["range"],
        ),
        "SMS_PROVIDER_ATTEMPTS": Counter(
            "journey_worker_sms_provider_attempts_total",
            "Calls to each SMS provider by outcome.",
            ["provider", "outcome"],
        ),
        "SMS_PROVIDER_CIRCUIT_OPENS": Counter(
            "journey_worker_sms_provider_circuit_opens_total",
            "Times a provider's circuit breaker opened in a worker process.",
            ["provider"],
        ),
        "SEND_POLICY": Counter(
            "journey_worker_send_policy_total",
            "Sends the tenant's policy held, by rule (quiet_hours, frequency_capped) and action"
            " (deferred, skipped); only for steps whose write held.",
            ["rule", "action"],
        ),
        "TIMEZONE_FALLBACKS": Counter(
            "journey_worker_timezone_fallbacks_total",
            "Time zone names that could not be used, by source (contact, phone, tenant): the"
            " next source was used instead.",
            ["source"],
        ),
        "JOURNEY_EDITS": Counter(
            "journey_worker_journey_edit_contacts_total",
            "Contacts whose node a live edit deleted: redirected, node_removed (journey ended"
            " there) or node_not_found (held until upstream says where).",
            ["action"],
        ),
    }


def created() -> bool:
    """Whether this process has constructed its metrics (and so fixed their value class)."""
    return _metrics is not None


def __getattr__(name: str) -> Any:
    global _metrics
    if name not in NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    metrics = _metrics
    if metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _create()
            metrics = _metrics
    return metrics[name]
