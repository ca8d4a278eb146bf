"""Publish Celery tasks with kombu alone, the way a Node.js or Go service does.

Nothing of this project is imported here: the message is built by hand from the Celery message
protocol 2 (task name and id in the headers, body ``[args, kwargs, embed]``, JSON in UTF-8) and
published to the default exchange with routing key ``journeys``. If the worker accepts these
messages, any producer that follows the upstream contract is accepted too.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Exchange, Queue

QUEUE_NAME = "journeys"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True)
class TaskMessage:
    headers: dict[str, Any]
    body: list[Any]
    task_id: str


def build_message(
    task: str,
    kwargs: dict[str, Any],
    *,
    args: Sequence[Any] = (),
    task_id: str | None = None,
) -> TaskMessage:
    """Headers and body of one protocol-2 task message."""
    task_id = task_id or str(uuid.uuid4())
    headers = {
        "lang": "py",  # the protocol's name for "this layout", whatever the producer's language
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "argsrepr": json.dumps(list(args)),
        "kwargsrepr": json.dumps(kwargs)[:1024],
        "origin": f"kombu-producer@{socket.gethostname()}:{os.getpid()}",
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
    }
    return TaskMessage(headers=headers, body=[list(args), kwargs, dict(EMBED)], task_id=task_id)


class KombuProducer:
    """One connection to the broker; publish() sends a task and returns its id."""

    def __init__(self, broker_url: str) -> None:
        self.connection = Connection(broker_url)
        self.queue = Queue(QUEUE_NAME, exchange=Exchange(""), routing_key=QUEUE_NAME, durable=True)
        self.producer = self.connection.Producer(serializer="json")

    def publish(
        self,
        task: str,
        kwargs: dict[str, Any],
        *,
        args: Sequence[Any] = (),
        task_id: str | None = None,
        queue: str = QUEUE_NAME,
    ) -> str:
        message = build_message(task, kwargs, args=args, task_id=task_id)
        self.publish_message(message, queue=queue)
        return message.task_id

    def publish_message(self, message: TaskMessage, *, queue: str = QUEUE_NAME) -> None:
        """Publish a built message; publishing the same one twice duplicates it exactly.
        `queue` other than journeys stands for the worker's own messages (tests only)."""
        declared = (
            self.queue
            if queue == QUEUE_NAME
            else Queue(queue, exchange=Exchange(""), routing_key=queue, durable=True)
        )
        self.producer.publish(
            json.dumps(message.body).encode("utf-8"),
            exchange="",
            routing_key=queue,
            headers=message.headers,
            content_type="application/json",
            content_encoding="utf-8",
            correlation_id=message.task_id,
            delivery_mode=2,
            declare=[declared],
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.2},
        )

    def close(self) -> None:
        self.connection.release()

    def __enter__(self) -> KombuProducer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
