"""`journey-worker bench`: the production step path against the seed's "before" code and against
the most a one-node-per-task engine can do, on real PostgreSQL, Redis and RabbitMQ.

Everything benchmark-specific lives here, never in the product packages:

- bench.naive      the seed's "before" executeNode, written honestly in the SQLAlchemy ORM
- bench.ceiling    a no-op task that only enqueues its successor
- bench.probe      enqueue-to-commit timestamps, carried in message headers
- bench.celery_app `celery -A bench.celery_app worker`: the product app plus the bench tasks
- bench.seed       the isolated database, the journey, contacts, and COPY-loaded history
- bench.measure    statement, round-trip and Redis counters; the in-process and e2e runs
- bench.report     the table, the JSON, the chart and the goals
- bench.run        the orchestration, called by worker/commands/bench.py
"""
