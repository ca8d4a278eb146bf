"""`journey-worker contacts import FILE.csv --tenant ID`: merge a CSV of any size into a tenant's
contacts' attributes, in short chunks, resumable after a crash (worker/contact_import.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import click


@click.group()
def contacts() -> None:
    """Bulk changes to contacts."""


@contacts.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", "tenant_id", type=click.UUID, required=True, help="The tenant's id.")
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1, max=100_000),
    default=5000,
    show_default=True,
    help="Rows per transaction: each chunk's contacts are locked only while it runs.",
)
@click.option(
    "--pause-ms",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Sleep between chunks, to leave the database more room for journeys.",
)
@click.option(
    "--lock-timeout-ms",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="How long a chunk waits for a contact a step holds before it is tried again.",
)
@click.option("--quiet", is_flag=True, help="No progress lines, only the summary.")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object.")
def import_contacts(
    file: Path,
    tenant_id: uuid.UUID,
    chunk_size: int,
    pause_ms: int,
    lock_timeout_ms: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Merge FILE's attributes into the tenant's contacts.

    FILE is CSV with a header: contact_id first, then one column per attribute; each row
    merges its non-empty cells (as strings) into that contact's attributes, like
    journeys.update_contacts. Unknown and other tenants' contact ids are skipped and counted.
    Started again after a crash (same file, same tenant), it resumes after the last committed
    chunk. PostgreSQL only.
    """
    from db.engine import get_engine
    from worker.contact_import import ContactImportError, ImportReport, run_import

    def progress(report: ImportReport) -> None:
        if not quiet and (report.chunks % 20 == 0 or report.applied_rows == report.total_rows):
            click.echo(
                f"import {report.import_id}: {report.applied_rows}/{report.total_rows} rows, "
                f"{report.updated} contacts updated, {report.skipped} skipped",
                err=True,
            )

    try:
        report = run_import(
            get_engine(),
            file,
            tenant_id,
            chunk_size=chunk_size,
            pause_seconds=pause_ms / 1000,
            lock_timeout_ms=lock_timeout_ms,
            progress=progress,
        )
    except ContactImportError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.summary()))
        return
    resumed = f" (resumed after row {report.resumed_from})" if report.resumed_from else ""
    click.echo(
        f"import {report.import_id} completed{resumed}: {report.total_rows} rows, "
        f"{report.updated} contacts updated, {report.skipped} unknown or other tenants' ids "
        f"skipped, {report.chunks} chunks in {report.seconds:.1f} s "
        f"(COPY {report.copy_seconds:.1f} s, longest chunk {report.longest_chunk_seconds:.3f} s)"
    )
