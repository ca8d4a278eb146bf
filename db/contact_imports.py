"""The SQL of a resumable CSV contact import (PostgreSQL): progress rows in contact_imports, the
file COPYed into a session's temporary table, then applied in chunks of rows in file order."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

STAGING = "contact_import_rows"
UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"


@dataclass(frozen=True)
class ImportRow:
    id: uuid.UUID
    applied_rows: int
    total_rows: int | None
    updated_contacts: int
    skipped_contacts: int
    resumed: bool


@dataclass(frozen=True)
class ChunkResult:
    applied_rows: int
    updated: int
    skipped: int


class ImportConflict(Exception):
    """Another process advanced the same import: this one must stop."""


def start_or_resume(conn: Connection, tenant_id: uuid.UUID, source: str, sha256: str) -> ImportRow:
    """The running import of this file for this tenant, else a new one (the partial unique
    index allows one running import per file and tenant)."""
    row = conn.execute(
        text(
            "INSERT INTO contact_imports (tenant_id, source, source_sha256) "
            "VALUES (:t, :s, :h) ON CONFLICT (tenant_id, source_sha256) "
            "WHERE status = 'RUNNING' DO NOTHING RETURNING id"
        ),
        {"t": tenant_id, "s": source, "h": sha256},
    ).first()
    resumed = row is None
    found = conn.execute(
        text(
            "SELECT id, applied_rows, total_rows, updated_contacts, skipped_contacts "
            "FROM contact_imports WHERE tenant_id = :t AND source_sha256 = :h "
            "AND status = 'RUNNING'"
        ),
        {"t": tenant_id, "h": sha256},
    ).one()
    return ImportRow(*found, resumed=resumed)


def try_lock(conn: Connection, import_id: uuid.UUID) -> bool:
    """A session advisory lock per import: one process applies it at a time, and a crashed
    process's lock goes with its connection."""
    return bool(
        conn.execute(
            text("SELECT pg_try_advisory_lock(hashtextextended('contact_import:' || :i, 0))"),
            {"i": str(import_id)},
        ).scalar_one()
    )


def create_staging(conn: Connection, columns: int) -> None:
    """The session's temporary table: row_no is the row's position in the file (1-based)."""
    values = ", ".join(f"c{i} text" for i in range(columns))
    conn.execute(text(f"DROP TABLE IF EXISTS {STAGING}"))
    conn.execute(
        text(
            f"CREATE TEMPORARY TABLE {STAGING} ("
            "row_no bigint GENERATED ALWAYS AS IDENTITY, contact_id text"
            f"{', ' + values if values else ''})"
        )
    )


def copy_statement(columns: int) -> str:
    names = ", ".join(["contact_id", *(f"c{i}" for i in range(columns))])
    return f"COPY {STAGING} ({names}) FROM STDIN WITH (FORMAT csv, HEADER true)"


def index_staging(conn: Connection) -> int:
    """Index the rows by position and give the planner their statistics (autovacuum never
    analyzes temporary tables); returns the number of rows."""
    conn.execute(text(f"ALTER TABLE {STAGING} ADD PRIMARY KEY (row_no)"))
    conn.execute(text(f"ANALYZE {STAGING}"))
    return int(conn.execute(text(f"SELECT count(*) FROM {STAGING}")).scalar_one())


def malformed_ids(conn: Connection, limit: int = 5) -> list[tuple[int, str | None]]:
    """Rows whose contact_id is not a UUID: (row number, value)."""
    rows = conn.execute(
        text(
            f"SELECT row_no, left(contact_id, 64) FROM {STAGING} "
            "WHERE contact_id IS NULL OR contact_id !~ :pattern ORDER BY row_no LIMIT :n"
        ),
        {"pattern": UUID_PATTERN, "n": limit},
    )
    return [(int(r[0]), r[1]) for r in rows]


def set_total(conn: Connection, import_id: uuid.UUID, total: int) -> None:
    conn.execute(
        text("UPDATE contact_imports SET total_rows = :n, updated_at = now() WHERE id = :i"),
        {"n": total, "i": import_id},
    )


def claim_chunk(conn: Connection, import_id: uuid.UUID, after: int, upto: int) -> None:
    """Advance the import from `after` to `upto`, in the chunk's transaction, only if it is
    still at `after`: the row lock and the condition make each chunk apply once."""
    claimed = conn.execute(
        text(
            "UPDATE contact_imports SET applied_rows = :upto, updated_at = now() "
            "WHERE id = :i AND applied_rows = :after AND status = 'RUNNING'"
        ),
        {"i": import_id, "after": after, "upto": upto},
    ).rowcount
    if claimed != 1:
        raise ImportConflict(f"import {import_id} is no longer at row {after}")


def apply_chunk(
    conn: Connection,
    *,
    import_id: uuid.UUID,
    tenant_id: uuid.UUID,
    attribute_names: Sequence[str],
    after: int,
    upto: int,
) -> ChunkResult:
    """Rows after..upto (file order) merged into the tenant's contacts in one UPDATE ... FROM.

    A contact named by several rows gets their cells merged in file order (the later wins),
    so the UPDATE matches each contact once. Empty cells set nothing. Call inside the chunk's
    transaction, after claim_chunk."""
    cells = ", ".join(f"c{i}" for i in range(len(attribute_names)))
    result = conn.execute(
        text(
            f"""
            WITH chunk AS (
                SELECT row_no, CAST(contact_id AS uuid) AS contact_id, ARRAY[{cells}] AS cells
                  FROM {STAGING} WHERE row_no > :after AND row_no <= :upto
            ), merged AS (
                SELECT chunk.contact_id, jsonb_object_agg(cell.name, cell.value ORDER BY row_no)
                       AS attributes
                  FROM chunk, unnest(CAST(:names AS text[]), chunk.cells) AS cell(name, value)
                 WHERE cell.value IS NOT NULL
                 GROUP BY chunk.contact_id
            ), updated AS (
                UPDATE contacts c
                   SET attributes = c.attributes || merged.attributes, updated_at = now()
                  FROM merged
                 WHERE c.id = merged.contact_id AND c.tenant_id = :tenant_id
                RETURNING c.id
            ), counted AS (
                SELECT (SELECT count(*) FROM updated) AS updated,
                       (SELECT count(*) FROM merged) - (SELECT count(*) FROM updated) AS skipped
            ), progress AS (
                UPDATE contact_imports i
                   SET updated_contacts = i.updated_contacts + counted.updated,
                       skipped_contacts = i.skipped_contacts + counted.skipped
                  FROM counted WHERE i.id = :import_id
                RETURNING counted.updated, counted.skipped
            )
            SELECT updated, skipped FROM progress
            """
        ),
        {
            "after": after,
            "upto": upto,
            "names": list(attribute_names),
            "tenant_id": tenant_id,
            "import_id": import_id,
        },
    ).one()
    return ChunkResult(applied_rows=upto, updated=int(result[0]), skipped=int(result[1]))


def finish(conn: Connection, import_id: uuid.UUID) -> None:
    conn.execute(
        text(
            "UPDATE contact_imports SET status = 'COMPLETED', finished_at = now(), "
            "updated_at = now() WHERE id = :i"
        ),
        {"i": import_id},
    )


def chunk_bounds(start: int, total: int, size: int) -> Iterable[tuple[int, int]]:
    """(after, upto) pairs covering rows start+1..total."""
    after = start
    while after < total:
        upto = min(after + size, total)
        yield after, upto
        after = upto
