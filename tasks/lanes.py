"""Lanes: which queue a message of the worker's own goes to, so nobody waits behind a blast.

Three queues, consumed by every worker, which the brokers serve in turn (Redis: kombu rotates
the queues it pops; RabbitMQ: one consumer per queue on the channel):

- `journeys.dispatch`: the due-step dispatcher alone. Whatever the backlog, it waits for at
  most the tasks already running, never behind queued work (issue 11: due waits fire on time).
- `journeys`: what upstream publishes (enroll, execute_node, events) and the worker's small
  batches: the steps of ordinary journeys, of every tenant.
- `journeys.bulk`: batches of BULK_BATCH_MIN journey contacts or messages and more. A tenant's
  blast moves in full batches, so its steps queue here; another tenant's journey of a few
  contacts moves in small batches on `journeys`, served every other task.

Routing by batch size needs no shared state: a blast is large batches by construction (enroll
and the dispatcher group contacts by node, BATCH_SIZE at a time), and the rare small batch of
a blast (a remainder) costs the interactive lane one short task.
"""

from __future__ import annotations

from typing import Any

from tasks import names

BATCHED = {
    names.EXECUTE_BATCH: "journey_contacts",
    names.DELIVER_MESSAGES: "message_ids",
}


def lane_for(task_name: str, kwargs: dict[str, Any], bulk_batch_min: int) -> str:
    """The queue for one of the worker's own messages."""
    if task_name == names.DISPATCH_DUE:
        return names.DISPATCH_QUEUE
    field = BATCHED.get(task_name)
    if field is not None and len(kwargs.get(field) or ()) >= bulk_batch_min:
        return names.BULK_QUEUE
    return names.DEFAULT_QUEUE
