"""The ceiling: the same contacts and nodes walked by a task that does nothing but enqueue its
successor, through the same broker, worker, task base class and publish path as the engine.

No one-node-per-task engine can go faster on this machine and configuration than this task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import shared_task

from bench import probe
from tasks.base import JourneyTask, publish
from tasks.engine import Followup

CEILING_STEP = "bench.ceiling_step"


def ceiling_kwargs(
    tenant_id: Any, journey_contact_id: Any, node_id: Any, step: int, steps: int
) -> dict[str, Any]:
    return {
        "tenant_id": str(tenant_id),
        "journey_contact_id": str(journey_contact_id),
        "node_id": str(node_id),
        "step": step,
        "steps": steps,
    }


def successor(kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The next step's arguments, or None after the last node."""
    step, steps = int(kwargs["step"]), int(kwargs["steps"])
    if step + 1 >= steps:
        return None
    return {**kwargs, "step": step + 1}


@shared_task(bind=True, base=JourneyTask, name=CEILING_STEP)
def ceiling_step(self: JourneyTask, **kwargs: Any) -> None:
    following = successor(kwargs)
    probe.mark_commit()
    if following is not None:
        publish(self.app, [Followup(CEILING_STEP, following)])
