"""`journey-worker health` and `journey-worker report`: what an operator or a probe asks."""

from __future__ import annotations

import json
import sys

import click

from worker.health import DEFAULT_TIMEOUT_SECONDS, reason, run_checks


@click.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds each network check may take; the whole run is bounded by twice this.",
)
def health(timeout: float) -> None:
    """Check database, migrations, the twelve indexes, cache and broker; one line each.

    Exits 0 when every check is ok, 1 otherwise: usable as a container probe.
    """
    results = run_checks(timeout=timeout)
    width = max(len(result.name) for result in results)
    for result in results:
        click.echo(result.line(width))
    sys.exit(0 if all(result.ok for result in results) else 1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of tables.")
def report(as_json: bool) -> None:
    """Slow statements, index usage, connections, cache hit ratios, queue depth, contacts by
    status and recent task failures: the monitoring report, in one command.

    A section that cannot be collected says `unavailable: <reason>`; the rest still appear.
    """
    from db.engine import get_engine
    from worker.report import collect, render_text

    # A bad DATABASE_URL makes the database sections unavailable, not the whole report.
    try:
        engine, engine_error = get_engine(), None
    except Exception as exc:
        engine, engine_error = None, reason(exc)
    data = collect(engine, engine_error=engine_error)
    click.echo(json.dumps(data, indent=2, default=str) if as_json else render_text(data))
