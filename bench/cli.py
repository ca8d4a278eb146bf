"""`journey-worker bench`: naive vs optimized vs ceiling (and blast) on the real PostgreSQL,
Redis and RabbitMQ, in one run. The bench builds on the worker, never the other way round: the
worker's command line finds this command through the `journey_worker.commands` entry point."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command()
@click.option(
    "--contacts", default=100, show_default=True, help="Contacts walking the journey end to end."
)
@click.option("--nodes", default=10, show_default=True, help="Nodes in the journey (linear).")
@click.option(
    "--brokers",
    default="redis,rabbitmq",
    show_default=True,
    help="Comma-separated brokers for the end-to-end runs: redis, rabbitmq.",
)
@click.option(
    "--inproc-contacts", default=40, show_default=True, help="Contacts per in-process timing pass."
)
@click.option(
    "--growth-rows",
    default=1_000_000,
    show_default=True,
    help="Execution rows in the large table of the growth measurement (COPY-loaded).",
)
@click.option(
    "--growth-base-rows",
    default=10_000,
    show_default=True,
    help="Execution rows in the small table (at most a tenth of --growth-rows).",
)
@click.option(
    "--growth-contacts", default=20, show_default=True, help="Contacts per growth timing pass."
)
@click.option("--rounds", default=1, show_default=True, help="End-to-end rounds per mode (median).")
@click.option(
    "--warmup-contacts", default=20, show_default=True, help="Contacts per warm-up run per mode."
)
@click.option("--concurrency", default=2, show_default=True, help="Prefork children of the worker.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds allowed per e2e run.")
@click.option(
    "--database-url",
    default=None,
    help="PostgreSQL server to create the bench database on [default: DATABASE_URL, else "
    "postgresql+psycopg://postgres@127.0.0.1:5432/test].",
)
@click.option(
    "--redis-url",
    default=None,
    help="Redis for the cache and the Redis broker [default: REDIS_URL, else "
    "redis://127.0.0.1:6379/0].",
)
@click.option(
    "--rabbitmq-url",
    default="amqp://guest:guest@127.0.0.1:5672//",
    show_default=True,
    help="RabbitMQ server; the bench adds and removes its own vhost (rabbitmqctl).",
)
@click.option(
    "--worker-loglevel", default="INFO", show_default=True, help="The worker's --loglevel."
)
@click.option(
    "--modes",
    default="naive,optimized,ceiling,blast",
    show_default=True,
    help="Comma-separated: naive, optimized, ceiling (any of them runs all three, in process "
    "and end to end, and the growth measurement) and blast.",
)
@click.option(
    "--blast-contacts",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Contacts enrolled at once (journeys.enroll) in the blast.",
)
@click.option(
    "--blast-ceiling-contacts",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Contacts walked by the no-op ceiling task before and after each blast (4 tasks each; "
    "the ratio uses the mean of the two).",
)
@click.option(
    "--blast-warmup-contacts",
    type=click.IntRange(min=0),
    default=400,
    show_default=True,
    help="Contacts of a warm-up blast before the measured one (0: none).",
)
@click.option(
    "--task-events",
    type=click.Choice(["off", "on", "both"]),
    default="off",
    show_default=True,
    help="Task events (WORKER_SEND_TASK_EVENTS) in the blast's worker and its ceiling; both "
    "runs each blast twice.",
)
@click.option("--keep", is_flag=True, help="Keep the bench database instead of dropping it.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--chart", "chart_path", type=click.Path(dir_okay=False, path_type=Path), default=None
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a cProfile dump of one extra optimized in-process pass.",
)
@click.option(
    "--worker-profile",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run the worker children's tasks under cProfile; pstats files go to this directory.",
)
@click.option(
    "--logs",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep each broker's worker log and raw timing samples in this directory.",
)
def bench(
    contacts: int,
    nodes: int,
    brokers: str,
    inproc_contacts: int,
    growth_rows: int,
    growth_base_rows: int,
    growth_contacts: int,
    rounds: int,
    warmup_contacts: int,
    concurrency: int,
    timeout: float,
    database_url: str | None,
    redis_url: str | None,
    rabbitmq_url: str,
    worker_loglevel: str,
    modes: str,
    blast_contacts: int,
    blast_ceiling_contacts: int,
    blast_warmup_contacts: int,
    task_events: str,
    keep: bool,
    json_path: Path | None,
    chart_path: Path | None,
    profile: Path | None,
    worker_profile: Path | None,
    logs: Path | None,
) -> None:
    """Benchmark the step engine: naive (a straightforward ORM baseline), optimized (production) and
    ceiling (a no-op task), in-process and end to end through real `celery worker` processes."""
    # Imported when the command runs: `journey-worker --help` stays quick.
    from bench.errors import BenchError
    from bench.run import Options, parse_brokers, parse_modes, run_and_write
    from bench.worker_process import BrokerNamespaceError, WorkerError

    for name, value in (
        ("--contacts", contacts),
        ("--nodes", nodes),
        ("--inproc-contacts", inproc_contacts),
        ("--growth-rows", growth_rows),
        ("--growth-contacts", growth_contacts),
        ("--rounds", rounds),
        ("--concurrency", concurrency),
    ):
        if value < 1:
            raise click.BadParameter(f"must be at least 1, got {value}", param_hint=name)
    try:
        broker_list = parse_brokers(brokers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--brokers") from None
    if not broker_list:
        raise click.BadParameter("name at least one broker", param_hint="--brokers")
    try:
        mode_list = parse_modes(modes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--modes") from None
    if chart_path is not None:
        try:
            import matplotlib  # noqa: F401 - checked before minutes of benchmarking, not after
        except ImportError:
            raise click.ClickException(
                "--chart needs matplotlib: pip install 'journey-worker[bench]'"
            ) from None
    options = Options(
        contacts=contacts,
        nodes=nodes,
        brokers=broker_list,
        inproc_contacts=inproc_contacts,
        growth_rows=growth_rows,
        growth_base_rows=growth_base_rows,
        growth_contacts=growth_contacts,
        rounds=rounds,
        warmup_contacts=warmup_contacts,
        concurrency=concurrency,
        timeout=timeout,
        database_url=database_url,
        redis_url=redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        rabbitmq_url=rabbitmq_url,
        worker_loglevel=worker_loglevel,
        keep=keep,
        modes=mode_list,
        blast_contacts=blast_contacts,
        blast_ceiling_contacts=blast_ceiling_contacts,
        blast_warmup_contacts=blast_warmup_contacts,
        task_events={"off": (False,), "on": (True,), "both": (False, True)}[task_events],
        profile=profile,
        worker_profile=worker_profile,
        logs=logs,
    )
    try:
        run_and_write(options, json_path, chart_path, click.echo)
    except (BenchError, BrokerNamespaceError, WorkerError) as exc:
        raise click.ClickException(str(exc)) from exc
