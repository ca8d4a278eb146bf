"""Prometheus metrics of the worker. Under prefork, prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR) aggregates the children; the worker command sets it up."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STEPS = Counter(
    "journey_worker_steps_total",
    "Node executions by node type and outcome.",
    ["node_type", "outcome", "status"],
)
STEP_SECONDS = Histogram(
    "journey_worker_step_seconds",
    "Time to execute one node, transaction included.",
    ["node_type"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LOOP_DETECTIONS = Counter("journey_worker_loop_detections_total", "Contacts failed as loops.")
RETRIES = Counter("journey_worker_task_retries_total", "Task retries by task name.", ["task"])
FAILURES = Counter(
    "journey_worker_task_failures_total", "Tasks that failed for good, by task name.", ["task"]
)
DISPATCHED = Counter(
    "journey_worker_dispatched_total", "Steps published by the due-step dispatcher.", ["kind"]
)
MESSAGES = Counter("journey_worker_messages_total", "SMS deliveries by result.", ["status"])
