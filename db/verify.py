"""Check that the twelve performance indexes exist, are valid, and are what db/indexes.py says.

PostgreSQL renders an index definition in its own canonical way (casts, parentheses, schema,
`USING btree`), so instead of normalising text by hand this module asks PostgreSQL to render the
spec too: inside a transaction that is always rolled back, it creates each expected index on an
empty temporary copy of the real table (CREATE TEMP TABLE ... (LIKE ...), so column types and
therefore casts match) and compares pg_get_indexdef of both. A wrong column order, a missing
DESC, a missing or different predicate, a UNIQUE, another table: all show as a difference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, Engine, text

from db.indexes import PERFORMANCE_INDEXES, IndexSpec
from db.migrate import DEFAULT_LOCK_WAIT_SECONDS, build_performance_indexes, migration_lock


class IndexState(StrEnum):
    OK = "ok"
    MISSING = "MISSING"
    INVALID = "INVALID"
    DIFFERS = "DIFFERS"


@dataclass(frozen=True)
class IndexStatus:
    """What the database holds for one spec. `actual` is the database's definition, if any."""

    name: str
    state: IndexState
    expected: str
    actual: str | None = None

    @property
    def ok(self) -> bool:
        return self.state is IndexState.OK

    def line(self, width: int = 0) -> str:
        """One line for the operator, as `journey-worker db verify-indexes` prints it."""
        label = f"{self.state.value:<8} {self.name}"
        if self.state is IndexState.OK:
            return f"{self.state.value:<8} {self.name:<{width}}  {self.actual}"
        if self.state is IndexState.DIFFERS:
            return f"{label}: expected {self.expected} got {self.actual}"
        if self.state is IndexState.INVALID:
            return f"{label}: a failed or unfinished concurrent build ({self.actual})"
        return label


# A problem is an IndexStatus whose state is not OK.
IndexProblem = IndexStatus

_INDEXDEF = re.compile(r"^CREATE (UNIQUE )?INDEX (\S+) ON (?:(\S+)\.)?(\S+) (USING .*)$")


def inspect_indexes(
    engine: Engine, specs: tuple[IndexSpec, ...] = PERFORMANCE_INDEXES
) -> list[IndexStatus]:
    """One status per spec, in spec order."""
    with engine.connect() as connection:
        try:
            if connection.dialect.name == "postgresql":
                return _inspect_postgresql(connection, specs)
            return _inspect_sqlite(connection, specs)
        finally:
            # Everything above only reads, or builds temporary objects that must vanish.
            connection.rollback()


def verify_indexes(
    engine: Engine, specs: tuple[IndexSpec, ...] = PERFORMANCE_INDEXES
) -> list[IndexProblem]:
    """The specs that are missing, invalid or different from db/indexes.py; [] when all is well."""
    return [status for status in inspect_indexes(engine, specs) if not status.ok]


def repair_indexes(
    engine: Engine,
    specs: tuple[IndexSpec, ...] = PERFORMANCE_INDEXES,
    *,
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
) -> list[IndexProblem]:
    """Rebuild what verify_indexes finds wrong, the way migration 0002 builds; return what is left.

    At head, `db upgrade` does nothing, so an index dropped or broken after 0002 ran needs this.
    A DIFFERS index is dropped concurrently and built from the spec; INVALID and MISSING ones are
    handled by the same routine as migration 0002. PostgreSQL runs under the migration lock.
    """
    problems = verify_indexes(engine, specs)
    if not problems:
        return []
    by_name = {spec.name: spec for spec in specs}
    broken = tuple(by_name[p.name] for p in problems)
    with engine.connect() as connection:
        if connection.dialect.name != "postgresql":
            with connection.begin():
                for spec in broken:
                    connection.execute(text(spec.drop_sql(concurrently=False)))
                build_performance_indexes(connection, broken)
            return verify_indexes(engine, specs)
        # Concurrent builds and drops refuse a transaction block. (The pool resets the isolation
        # level when the connection goes back.)
        connection.execution_options(isolation_level="AUTOCOMMIT")
        with migration_lock(connection, lock_wait_seconds):
            for problem in problems:
                if problem.state is IndexState.DIFFERS:
                    connection.execute(text(by_name[problem.name].drop_sql(concurrently=True)))
            build_performance_indexes(connection, broken)
    return verify_indexes(engine, specs)


def _inspect_postgresql(connection: Connection, specs: tuple[IndexSpec, ...]) -> list[IndexStatus]:
    rows = connection.execute(
        text(
            "SELECT c.relname AS name, t.relname AS tablename, n.nspname AS schemaname, "
            "i.indisvalid AND i.indisready AS valid, pg_get_indexdef(c.oid) AS indexdef "
            "FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_class t ON t.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = ANY(:names)"
        ),
        {"names": [spec.name for spec in specs]},
    ).all()
    found = {row.name: row for row in rows}
    schema = connection.execute(text("SELECT current_schema()")).scalar_one()
    expected = _render_expected(connection, schema, [s for s in specs if s.name in found])

    statuses: list[IndexStatus] = []
    for spec in specs:
        row = found.get(spec.name)
        want = expected.get(spec.name) or _plain(spec, schema)
        if row is None:
            statuses.append(IndexStatus(spec.name, IndexState.MISSING, want))
        elif not row.valid:
            statuses.append(IndexStatus(spec.name, IndexState.INVALID, want, row.indexdef))
        elif _shape(row.indexdef) != _shape(want):
            statuses.append(IndexStatus(spec.name, IndexState.DIFFERS, want, row.indexdef))
        else:
            statuses.append(IndexStatus(spec.name, IndexState.OK, want, row.indexdef))
    return statuses


def _render_expected(connection: Connection, schema: str, specs: list[IndexSpec]) -> dict[str, str]:
    """pg_get_indexdef of each spec, built on an empty temporary copy of its table.

    Runs in the caller's transaction, which inspect_indexes always rolls back: the copies and
    probe indexes never outlive the check, and the real tables are only read (LIKE).
    """
    rendered: dict[str, str] = {}
    copies: dict[str, str] = {}
    for number, spec in enumerate(specs):
        copy = copies.get(spec.table)
        if copy is None:
            copy = copies[spec.table] = f"jw_verify_{len(copies)}"
            connection.execute(text(f'CREATE TEMP TABLE "{copy}" (LIKE "{schema}"."{spec.table}")'))
        probe = f"jw_verify_idx_{number}"
        where = f" WHERE {spec.where}" if spec.where else ""
        connection.execute(
            text(f'CREATE INDEX "{probe}" ON pg_temp."{copy}" ({", ".join(spec.columns)}){where}')
        )
        indexdef = connection.execute(
            text("SELECT pg_get_indexdef(CAST(:probe AS regclass))"), {"probe": f"pg_temp.{probe}"}
        ).scalar_one()
        match = _INDEXDEF.match(indexdef)
        assert match is not None, indexdef
        unique = match.group(1) or ""
        rendered[spec.name] = (
            f"CREATE {unique}INDEX {spec.name} ON {schema}.{spec.table} {match.group(5)}"
        )
    return rendered


def _shape(indexdef: str) -> tuple[str, str, str] | str:
    """(UNIQUE or not, table, `USING method (terms) WHERE predicate`) of a pg_get_indexdef text."""
    match = _INDEXDEF.match(indexdef)
    if match is None:
        return indexdef
    return (match.group(1) or "", match.group(4), match.group(5))


def _plain(spec: IndexSpec, schema: str) -> str:
    # Used only for a MISSING index, where there is nothing to compare with.
    where = f" WHERE {spec.where}" if spec.where else ""
    return f"CREATE INDEX {spec.name} ON {schema}.{spec.table} ({', '.join(spec.columns)}){where}"


def _inspect_sqlite(connection: Connection, specs: tuple[IndexSpec, ...]) -> list[IndexStatus]:
    # SQLite has no invalid indexes and keeps the CREATE text verbatim: presence and table only.
    rows = connection.execute(
        text("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'")
    ).all()
    found = {row.name: row for row in rows}
    statuses: list[IndexStatus] = []
    for spec in specs:
        want = spec.create_sql(concurrently=False)
        row = found.get(spec.name)
        if row is None:
            statuses.append(IndexStatus(spec.name, IndexState.MISSING, want))
        elif row.tbl_name != spec.table:
            statuses.append(IndexStatus(spec.name, IndexState.DIFFERS, want, row.sql))
        else:
            statuses.append(IndexStatus(spec.name, IndexState.OK, want, row.sql))
    return statuses
