"""Counting the statements an engine runs: the claims about queries are counts, not guesses."""

from __future__ import annotations

import re
import tempfile
import threading
from collections import Counter
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?([a-z_]+)\"?", re.IGNORECASE)


# What the current thread is doing (a task name, say), so counts can be told apart by it.
statement_scope: ContextVar[str] = ContextVar("statement_scope", default="other")


class StatementCounter:
    """Counts statements by kind and by the tables they touch, for as long as it is attached."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.total = 0
        self.by_kind: Counter[str] = Counter()
        # The statement's own table: the first after FROM, INTO or UPDATE. A join does not count,
        # so the step's read (FROM journey_contacts, joined with journeys and tenants) is not a
        # tenant read.
        self.by_table: Counter[str] = Counter()
        self.by_scope: Counter[str] = Counter()
        self.commits_by_scope: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        kind = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        match = _TABLE.search(statement)
        with self._lock:
            self.total += 1
            self.by_kind[kind] += 1
            self.by_table[match.group(1).lower() if match else "?"] += 1
            self.by_scope[statement_scope.get()] += 1

    def _commit(self, conn: Any) -> None:
        with self._lock:
            self.by_kind["COMMIT"] += 1
            self.commits_by_scope[statement_scope.get()] += 1

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "commit", self._commit)

    def touching(self, *tables: str) -> int:
        """Statements whose own table is one of these."""
        return sum(self.by_table[t] for t in tables)


class WireTrace:
    """libpq's own protocol trace of the engine's one pooled connection: every ReadyForQuery the
    server sends ends one round trip, whatever SQLAlchemy saw (psycopg's BEGIN included).

    That holds outside psycopg's pipeline mode, which the engine does not use; in pipeline mode
    several syncs travel together and this count would overstate the round trips."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.available = False
        self.roundtrips = 0
        self.queries: Counter[str] = Counter()
        self.reason = ""

    def __enter__(self) -> WireTrace:
        raw = self.engine.raw_connection()
        self._pg: Any = raw.driver_connection
        raw.close()  # back to the pool: the one connection every step will use
        self._file = tempfile.NamedTemporaryFile("w+", suffix=".pqtrace", delete=False)
        try:
            from psycopg import pq

            self._pg.pgconn.trace(self._file.fileno())
            self._pg.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            self.available = True
        except Exception as exc:  # an old libpq or the pure-Python psycopg
            self.reason = f"{type(exc).__name__}: {exc}"
        return self

    def __exit__(self, *exc: object) -> None:
        path = Path(self._file.name)
        try:
            if self.available:
                self._pg.pgconn.untrace()
            self._file.close()
            if self.available:
                for line in path.read_text(errors="replace").splitlines():
                    parts = line.split("\t")
                    if len(parts) < 3:
                        continue
                    if parts[0] == "B" and parts[2] == "ReadyForQuery":
                        self.roundtrips += 1
                    elif parts[0] == "F" and parts[2] == "Query" and len(parts) > 3:
                        # Simple-protocol queries: psycopg's BEGIN and COMMIT travel this way.
                        words = parts[3].strip().strip('"').split(None, 1)
                        self.queries[words[0].upper() if words else "?"] += 1
        finally:
            path.unlink(missing_ok=True)
