"""`celery -A bench.celery_app worker`: the product's app (worker.app, same settings, same
signals) with the bench tasks registered and the bench probe installed.

The product code knows nothing of the bench. The one bench-only setting: deliveries are routed
to a queue this worker does not consume, so every mode spends the worker on node steps alone
(the naive and optimized steps still insert the message and publish its delivery).
"""

from __future__ import annotations

import os

from celery import Celery

from bench import ceiling as _ceiling  # noqa: F401 - registers the ceiling task
from bench import naive as _naive  # noqa: F401 - registers the naive task
from bench import probe
from tasks import names
from worker import app

DELIVERY_QUEUE = "jw-bench-deliveries"


def configure(celery_app: Celery) -> Celery:
    celery_app.conf.task_routes = {names.DELIVER_MESSAGE: {"queue": DELIVERY_QUEUE}}
    return celery_app


configure(app)
if os.environ.get(probe.SAMPLES_ENV):
    probe.install()

__all__ = ["app", "configure"]
