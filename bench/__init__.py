"""`journey-worker bench`: the production step path against the seed's "before" code and against
the most a one-node-per-task engine can do, on real PostgreSQL, Redis and RabbitMQ.

Everything benchmark-specific lives here, never in the product packages:

- bench.naive      the seed's "before" executeNode, written honestly in the SQLAlchemy ORM
- bench.ceiling    a no-op task that only enqueues its successor
- bench.probe      enqueue-to-commit timestamps, carried in message headers
- bench.celery_app `celery -A bench.celery_app worker`: the product app plus the bench tasks
- bench.seed       the isolated database, the journey, contacts, and COPY-loaded history
- bench.counters   statement, round-trip and Redis counters (and pg_stat_statements)
- bench.walkers    each mode's step in process, walking contacts through the journey
- bench.effects    what a run left in the database, and the check that it is complete
- bench.e2e        end to end through a real worker, timed from the probe's samples
- bench.blast      N contacts through journeys.enroll, batches end to end, exactly once
- bench.proc       /proc readings: CPU, RSS, PostgreSQL backends
- bench.worker_process  the worker-process rig shared with tests/worker_process.py
- bench.stats, bench.errors  percentiles; the bench's error
- bench.report     the table, the JSON, the chart and the goals
- bench.run        the orchestration, called by bench/cli.py (`journey-worker bench`)
"""
