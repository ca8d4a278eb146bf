"""`journey-worker stats JOURNEY_ID`: the journey's funnel as a table (rich). PostgreSQL only."""

from __future__ import annotations

import uuid

import click


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "-"


@click.command()
@click.argument("journey_id", type=click.UUID)
@click.option("--refresh", is_flag=True, help="Refresh the view first (as the beat task does).")
@click.option(
    "--days",
    type=click.IntRange(0, 366),
    default=0,
    show_default=True,
    help="Also show the last N UTC days, one table each.",
)
def stats(journey_id: uuid.UUID, refresh: bool, days: int) -> None:
    """Per node, in funnel order: contacts that reached it, executions and messages by status."""
    from rich.console import Console
    from rich.table import Table

    from db import stats as db_stats
    from db.engine import get_engine
    from db.pages import NotFound, journey_tenant
    from db.settings import ConfigError
    from tasks.settings import engine_settings

    engine = get_engine()
    if engine.dialect.name != "postgresql":
        raise ConfigError("DATABASE_URL", "stats needs PostgreSQL (a materialized view)")
    console = Console()
    if refresh:
        settings = engine_settings()
        result = db_stats.refresh(
            engine,
            statement_timeout_ms=settings.stats_refresh_statement_timeout_ms,
            lock_timeout_ms=settings.stats_refresh_lock_timeout_ms,
        )
        if not result.refreshed:
            console.print("another refresh is running; showing the last one")
    try:
        with engine.connect() as conn:
            tenant_id = journey_tenant(conn, journey_id)
            funnel = db_stats.read_funnel(conn, tenant_id, journey_id, days=days)
    except (NotFound, db_stats.JourneyNotFound):
        raise click.ClickException(f"no such journey: {journey_id}") from None

    types = {node.node_id: node.type for node in funnel.nodes}

    def table(title: str, rows: list[tuple[uuid.UUID, db_stats.NodeCounts]]) -> Table:
        out = Table(title=title, title_justify="left")
        out.add_column("#", justify="right")
        out.add_column("node")
        out.add_column("type")
        out.add_column("reached", justify="right")
        out.add_column("executions")
        out.add_column("messages")
        for position, (node_id, counts) in enumerate(rows, 1):
            out.add_row(
                str(position),
                str(node_id),
                types.get(node_id, "?"),
                str(counts.reached),
                _counts(dict(counts.executions)),
                _counts(dict(counts.messages)),
            )
        return out

    as_of = funnel.refreshed_at.isoformat() if funnel.refreshed_at else "never refreshed"
    console.print(
        table(
            f"journey {journey_id} (as of {as_of})",
            [(node.node_id, node.counts) for node in funnel.nodes],
        )
    )
    for day in funnel.days:
        console.print(table(f"{day.day.isoformat()} (UTC)", day.nodes))
