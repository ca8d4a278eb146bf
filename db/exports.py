"""Streaming exports of a journey's executions and messages: `COPY (SELECT ...) TO STDOUT`.

PostgreSQL formats every row (CSV with a header, or one JSON object per line) and the client only
moves bytes: memory stays constant however many rows there are, and a slow reader slows the
server down through the socket instead of piling rows up in this process. PostgreSQL only.

A CopyExport holds one pooled connection while it runs. Its chunks may be read from any thread
(the HTTP server reads them from a thread pool), one at a time; cancel() may be called from any
other thread at any moment and makes the server stop the query at once (a client that hung up).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from sqlalchemy import Engine

EXPORT_KINDS = ("executions", "messages")
EXPORT_FORMATS = ("csv", "jsonl")
CHUNK_BYTES = 64 * 1024


def _utc(column: str) -> str:
    # Spelled out, so the output does not depend on the session's TimeZone or DateStyle.
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


@dataclass(frozen=True)
class ExportShape:
    columns: tuple[tuple[str, str], ...]  # (name, SQL expression)
    source: str  # FROM ... WHERE, with {journey_id} and {tenant_id} placeholders


# Every join repeats the tenant: a row of another tenant can never come along.
_JOURNEY_STEPS = """
FROM journey_contacts jc
JOIN journey_node_executions e ON e.journey_contact_id = jc.id AND e.tenant_id = jc.tenant_id
"""
_WHERE = "WHERE jc.journey_id = {journey_id} AND jc.tenant_id = {tenant_id}"

SHAPES: dict[str, ExportShape] = {
    "executions": ExportShape(
        columns=(
            ("id", "e.id"),
            ("journey_contact_id", "e.journey_contact_id"),
            ("node_id", "e.node_id"),
            ("status", "e.status"),
            ("executed_at", _utc("e.executed_at")),
            ("contact_id", "jc.contact_id"),
            ("node_type", "n.type"),
            ("step_seq", "e.step_seq"),
            ("error", "e.error"),
            ("result", "e.result"),
            ("created_at", _utc("e.created_at")),
        ),
        source=_JOURNEY_STEPS
        + "LEFT JOIN journey_nodes n ON n.id = e.node_id AND n.tenant_id = jc.tenant_id\n"
        + _WHERE,
    ),
    "messages": ExportShape(
        columns=(
            ("id", "m.id"),
            ("journey_contact_id", "e.journey_contact_id"),
            ("journey_node_execution_id", "m.journey_node_execution_id"),
            ("node_id", "e.node_id"),
            ("contact_id", "m.contact_id"),
            ("direction", "m.direction"),
            ("status", "m.status"),
            ("body", "m.body"),
            ("sent_at", _utc("m.sent_at")),
            ("error", "m.error"),
            ("attempts", "m.attempts"),
            ("created_at", _utc("m.created_at")),
        ),
        source=_JOURNEY_STEPS
        + "JOIN messages m ON m.journey_node_execution_id = e.id AND m.tenant_id = jc.tenant_id\n"
        + _WHERE,
    ),
}


def header(kind: str) -> list[str]:
    return [name for name, _ in SHAPES[kind].columns]


def copy_statement(
    kind: str, fmt: str, tenant_id: uuid.UUID, journey_id: uuid.UUID
) -> sql.Composed:
    """The COPY statement. COPY takes no bind parameters, so the two ids are quoted literals."""
    if kind not in SHAPES:
        raise ValueError(f"unknown export {kind!r}; expected one of {', '.join(EXPORT_KINDS)}")
    shape = SHAPES[kind]
    if fmt == "csv":
        select = ", ".join(f"{expr} AS {name}" for name, expr in shape.columns)
        options = "FORMAT csv, HEADER true"
    elif fmt == "jsonl":
        pairs = ", ".join(f"'{name}', {expr}" for name, expr in shape.columns)
        select = f"json_build_object({pairs})::text"
        # One JSON document per line, byte for byte: PostgreSQL's JSON escapes every control
        # character (newlines included, as \n or \u0001), so with a quote and a delimiter that
        # cannot occur CSV never quotes the field and COPY adds nothing but the line end. (The
        # text format would double every backslash.)
        options = "FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01'"
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    template = f"COPY (SELECT {select} {shape.source}) TO STDOUT WITH ({options})"
    return sql.SQL(template).format(  # type: ignore[arg-type]
        journey_id=sql.Literal(str(journey_id)) + sql.SQL("::uuid"),
        tenant_id=sql.Literal(str(tenant_id)) + sql.SQL("::uuid"),
    )


class CopyExport:
    """One COPY ... TO STDOUT on a pooled connection, read in chunks of about CHUNK_BYTES."""

    def __init__(
        self,
        engine: Engine,
        statement: sql.Composed,
        *,
        statement_timeout_ms: int,
        read_only: bool = False,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._engine = engine
        self._statement = statement
        self._statement_timeout_ms = int(statement_timeout_ms)
        self._chunk_bytes = chunk_bytes
        self._read_only = read_only
        self._lock = threading.Lock()  # one reader at a time; close() waits for it
        self._raw: Any = None  # the pool's connection proxy
        self._driver: Any = None  # its psycopg connection (cancel() needs it)
        self._copy_cm: AbstractContextManager[Any] | None = None
        self._copy: Any = None
        self._finished = False
        self._cancelled = False
        self.messages = 0  # COPY data messages: one per row, the CSV header included
        self.bytes = 0

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def start(self) -> None:
        """Take a connection and start the COPY; errors here (no connection, a bad statement)
        surface before the first byte, while an HTTP answer can still say so."""
        with self._lock:
            self._open()

    def _open(self) -> None:
        if self._copy is not None or self._finished:
            return
        self._raw = self._engine.raw_connection()
        try:
            self._driver = self._raw.driver_connection
            if self._read_only:
                # BEGIN READ ONLY: the API's exports cannot write even by mistake.
                self._driver.read_only = True
            cursor = self._driver.cursor()
            # The whole export is one statement: the per-connection 60 s would cut it short.
            cursor.execute(
                sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(self._statement_timeout_ms)
                )
            )
            self._copy_cm = cursor.copy(self._statement)
            self._copy = self._copy_cm.__enter__()
        except BaseException:
            self._release(failed=True)
            raise

    def read_chunk(self) -> bytes:
        """The next bytes of the export; b"" once it is complete."""
        with self._lock:
            if self._finished:
                return b""
            self._open()
            buffer = bytearray()
            try:
                while len(buffer) < self._chunk_bytes:
                    data = self._copy.read()
                    if not data:
                        self._end(None)
                        break
                    self.messages += 1
                    buffer += data
            except BaseException as exc:
                self._end(exc)
                raise
            self.bytes += len(buffer)
            return bytes(buffer)

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self.read_chunk():
                yield chunk
        finally:
            self.close()

    def cancel(self) -> None:
        """From any thread: ask the server to stop the COPY now (a blocked read_chunk then
        raises QueryCanceled). Harmless when nothing runs."""
        driver = self._driver
        if driver is None or self._finished:
            return
        self._cancelled = True
        # The connection may be gone already; close() cleans up either way.
        with contextlib.suppress(Exception):
            driver.cancel_safe(timeout=5.0)

    def close(self) -> None:
        """End the export: an unfinished COPY is cancelled, and the connection goes back to the
        pool (or is discarded if it is broken)."""
        with self._lock:
            if self._finished:
                return
            if self._copy is None:
                self._finished = True
                return
            self._cancelled = True
            self._end(RuntimeError("export closed before the end"))

    def _end(self, exc: BaseException | None) -> None:
        """Leave the COPY block (psycopg cancels and drains an unfinished one) and release."""
        self._finished = True
        failed = exc is not None
        try:
            if self._copy_cm is not None:
                if exc is None:
                    self._copy_cm.__exit__(None, None, None)
                else:
                    self._copy_cm.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:
            failed = True
        finally:
            self._copy_cm = self._copy = None
            self._release(failed=failed)

    def _release(self, *, failed: bool) -> None:
        raw, self._raw, self._driver = self._raw, None, None
        if raw is None:
            return
        try:
            if failed:
                raw.rollback()
            else:
                raw.commit()
            if self._read_only:
                raw.driver_connection.read_only = None  # back to the server's default
            raw.close()
        except Exception:
            # A connection in an unknown state never goes back to the pool.
            raw.invalidate()
