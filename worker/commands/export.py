"""`journey-worker export JOURNEY_ID`: a journey's executions or messages as CSV or JSON lines,
streamed with COPY (db/exports.py) in constant memory, to a file or stdout. PostgreSQL only."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import click

from db.exports import EXPORT_FORMATS, EXPORT_KINDS


@click.command()
@click.argument("journey_id", type=click.UUID)
@click.option("--what", type=click.Choice(EXPORT_KINDS), default="executions", show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="csv", show_default=True
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    default="-",
    show_default=True,
    help="File to write; '-' is stdout. A file appears under its name only once complete.",
)
@click.option(
    "--statement-timeout-ms",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Give up after this long (0: never; Ctrl-C stops the query at once).",
)
def export(
    journey_id: uuid.UUID, what: str, fmt: str, output: Path, statement_timeout_ms: int
) -> None:
    """Export a journey's executions or messages (the API's export, for an operator)."""
    from db.engine import get_engine
    from db.exports import CopyExport, copy_statement
    from db.pages import NotFound, journey_tenant
    from db.settings import ConfigError

    engine = get_engine()
    if engine.dialect.name != "postgresql":
        raise ConfigError("DATABASE_URL", "export needs PostgreSQL (it streams with COPY)")
    try:
        with engine.connect() as conn:
            tenant_id = journey_tenant(conn, journey_id)
    except NotFound:
        raise click.ClickException(f"no such journey: {journey_id}") from None
    stream = CopyExport(
        engine,
        copy_statement(what, fmt, tenant_id, journey_id),
        statement_timeout_ms=statement_timeout_ms,
        read_only=True,
    )
    if str(output) == "-":
        for chunk in stream:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("wb") as out:
            for chunk in stream:
                out.write(chunk)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    click.echo(f"wrote {stream.bytes} bytes to {output}", err=True)
