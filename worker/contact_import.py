"""`journey-worker contacts import`: a CSV of any size merged into a tenant's contacts.

The file is COPYed into a temporary table on one connection, then applied in chunks of rows,
each chunk one short transaction that also advances the import's row in contact_imports. A
crashed or interrupted import started again with the same file and tenant resumes after its
last committed chunk; no chunk is applied twice (db/contact_imports.py claim_chunk)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from db import contact_imports as sql

COPY_BLOCK_BYTES = 1 << 20
# A chunk that meets a lock or statement timeout (a step holding a contact) is tried again.
CHUNK_ATTEMPTS = 5


class ContactImportError(Exception):
    """A problem with the file or the import an operator fixes; the message names it."""


@dataclass
class ImportReport:
    import_id: uuid.UUID
    resumed_from: int
    total_rows: int = 0
    applied_rows: int = 0
    updated: int = 0
    skipped: int = 0
    copy_seconds: float = 0.0
    seconds: float = 0.0
    chunk_seconds: list[float] = field(default_factory=list)

    @property
    def chunks(self) -> int:
        return len(self.chunk_seconds)

    @property
    def longest_chunk_seconds(self) -> float:
        """The longest chunk transaction: no contact row stays locked longer than this."""
        return max(self.chunk_seconds, default=0.0)

    def summary(self) -> dict[str, object]:
        chunks = sorted(self.chunk_seconds) or [0.0]
        return {
            "import_id": str(self.import_id),
            "resumed_from": self.resumed_from,
            "total_rows": self.total_rows,
            "applied_rows": self.applied_rows,
            "updated": self.updated,
            "skipped": self.skipped,
            "chunks": self.chunks,
            "copy_seconds": round(self.copy_seconds, 3),
            "seconds": round(self.seconds, 3),
            "chunk_p50_seconds": round(chunks[len(chunks) // 2], 4),
            "chunk_p99_seconds": round(chunks[min(len(chunks) - 1, len(chunks) * 99 // 100)], 4),
            "longest_chunk_seconds": round(self.longest_chunk_seconds, 4),
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(COPY_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def read_header(path: Path) -> list[str]:
    """The attribute names: every column but contact_id, which must come first."""
    with path.open(newline="", encoding="utf-8") as source:
        header = next(csv.reader(source), None)
    if not header:
        raise ContactImportError(
            f"{path}: empty file (expected a header: contact_id,attribute,...)"
        )
    names = [name.strip() for name in header]
    if names[0] != "contact_id":
        raise ContactImportError(
            f"{path}: the first column must be contact_id, got {names[0][:64]!r}"
        )
    attributes = names[1:]
    if not attributes:
        raise ContactImportError(f"{path}: no attribute columns after contact_id")
    empty = [i + 2 for i, name in enumerate(attributes) if not name]
    if empty:
        raise ContactImportError(f"{path}: column {empty[0]} has no name")
    seen: set[str] = set()
    for name in attributes:
        if name in seen:
            raise ContactImportError(f"{path}: column {name[:64]!r} appears twice")
        seen.add(name)
    return attributes


def run_import(
    engine: Engine,
    path: Path,
    tenant_id: uuid.UUID,
    *,
    chunk_size: int = 5000,
    pause_seconds: float = 0.0,
    lock_timeout_ms: int = 1000,
    progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Import (or resume importing) `path` into the tenant's contacts; returns the figures."""
    if engine.dialect.name != "postgresql":
        raise ContactImportError("contacts import needs PostgreSQL (it streams the file with COPY)")
    names = read_header(path)
    sha256 = file_sha256(path)
    started = time.monotonic()
    # One connection for the whole import: its temporary table and advisory lock are the
    # session's. Every unit below is its own transaction (begin ... commit).
    with engine.connect() as conn:
        with conn.begin():
            known = conn.execute(text("SELECT 1 FROM tenants WHERE id = :t"), {"t": tenant_id})
            if not known.first():
                raise ContactImportError(f"no such tenant: {tenant_id}")
            row = sql.start_or_resume(conn, tenant_id, str(path), sha256)
            locked = sql.try_lock(conn, row.id)
        if not locked:
            raise ContactImportError(f"import {row.id} of this file is running in another process")
        try:
            report = ImportReport(
                import_id=row.id,
                resumed_from=row.applied_rows,
                applied_rows=row.applied_rows,
                updated=row.updated_contacts,
                skipped=row.skipped_contacts,
            )
            report.total_rows = _stage(conn, path, names)
            report.copy_seconds = time.monotonic() - started
            with conn.begin():
                bad = sql.malformed_ids(conn)
                if bad:
                    shown = ", ".join(f"line {n + 1}: {value!r}" for n, value in bad)
                    raise ContactImportError(
                        f"{path}: contact_id is not a UUID ({shown}); nothing applied"
                    )
                if row.total_rows is not None and row.total_rows != report.total_rows:
                    raise ContactImportError(
                        f"import {row.id}: the file now has {report.total_rows} rows, "
                        f"{row.total_rows} when it started"
                    )
                sql.set_total(conn, row.id, report.total_rows)
            for after, upto in sql.chunk_bounds(row.applied_rows, report.total_rows, chunk_size):
                chunk_seconds, result = _apply_with_retries(
                    conn, row.id, tenant_id, names, after, upto, lock_timeout_ms
                )
                report.applied_rows = upto
                report.updated += result.updated
                report.skipped += result.skipped
                report.chunk_seconds.append(chunk_seconds)
                if progress is not None:
                    progress(report)
                if pause_seconds:
                    time.sleep(pause_seconds)
            with conn.begin():
                sql.finish(conn, row.id)
        finally:
            # The connection goes back to a pool: leave neither the lock nor the rows behind.
            # A broken connection is discarded by the pool, lock and table with it.
            with contextlib.suppress(DBAPIError):
                conn.rollback()
                conn.execute(text(f"DROP TABLE IF EXISTS {sql.STAGING}"))
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
                conn.commit()
    report.seconds = time.monotonic() - started
    return report


def _stage(conn: Connection, path: Path, names: list[str]) -> int:
    """COPY the whole file into the session's temporary table; returns its row count."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    with conn.begin():
        sql.create_staging(conn, len(names))
        # However long the file, the COPY is one statement: no statement timeout for it.
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        cursor = raw.cursor()
        try:
            with cursor.copy(sql.copy_statement(len(names))) as copy, path.open("rb") as source:
                while block := source.read(COPY_BLOCK_BYTES):
                    copy.write(block)
        except Exception as exc:
            # psycopg names the line: "extra data after last expected column ... line 7".
            detail = str(exc).strip().replace("\n", " ")
            raise ContactImportError(f"{path}: {detail[:400]}") from None
        finally:
            cursor.close()
        return sql.index_staging(conn)


def _apply_with_retries(
    conn: Connection,
    import_id: uuid.UUID,
    tenant_id: uuid.UUID,
    names: list[str],
    after: int,
    upto: int,
    lock_timeout_ms: int,
) -> tuple[float, sql.ChunkResult]:
    for attempt in range(1, CHUNK_ATTEMPTS + 1):
        began = time.monotonic()
        try:
            with conn.begin():
                # Wait briefly for a contact a step holds, rather than queueing the step behind
                # this chunk's other locks: the chunk is retried instead.
                conn.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
                sql.claim_chunk(conn, import_id, after, upto)
                result = sql.apply_chunk(
                    conn,
                    import_id=import_id,
                    tenant_id=tenant_id,
                    attribute_names=names,
                    after=after,
                    upto=upto,
                )
            return time.monotonic() - began, result
        except OperationalError:
            if attempt == CHUNK_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")
