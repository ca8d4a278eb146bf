"""Streaming exports: GET /v1/journeys/{journey_id}/{executions,messages}.{csv,jsonl}.

db/exports.py runs COPY ... TO STDOUT; this module moves its chunks to the client one at a time
(constant memory) and stops the query the moment the client goes away: the response listens for
the disconnect while it streams, and on it cancels the COPY on the server.

An export that fails after its first byte cannot change its status any more: the server closes
the connection without the final empty chunk, so the client sees a truncated transfer, never a
short file that looks complete.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.dependencies import ApiState, ExportSlots, State, TenantId
from api.problems import PROBLEM_RESPONSES, UNAVAILABLE, ApiProblem, not_found
from db import pages
from db.exports import EXPORT_FORMATS, EXPORT_KINDS, CopyExport, copy_statement, header

log = logging.getLogger("journey_worker.api.exports")

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)


class RunningExport:
    """An export between its start and its end: its chunks for the response, and one cleanup
    (cancel an unfinished COPY, give the connection and the slot back, log) that runs exactly
    once, whether the stream ended, failed, was cut by a disconnect, or never began."""

    def __init__(
        self, export: CopyExport, release: Callable[[], None], label: str, header_rows: int
    ) -> None:
        self.export = export
        self._release = release
        self._label = label
        self._header_rows = header_rows
        self._completed = False
        self._finished = False

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                # abandon_on_cancel: a disconnect must not wait for a read blocked on the
                # server; finish() cancels the query, which ends that read, and waits for it.
                chunk = await anyio.to_thread.run_sync(
                    self.export.read_chunk, abandon_on_cancel=True
                )
                if not chunk:
                    self._completed = True
                    return
                yield chunk
        except Exception:
            log.exception("export %s failed after %d bytes", self._label, self.export.bytes)
            raise
        finally:
            await self.finish()

    async def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        with anyio.CancelScope(shield=True):
            if not self._completed:
                self.export.cancel()
            await anyio.to_thread.run_sync(self.export.close)
        self._release()
        log.info(
            "export %s %s: %d rows, %d bytes",
            self._label,
            "completed" if self._completed else "stopped before the end (client gone or error)",
            max(self.export.messages - self._header_rows, 0),
            self.export.bytes,
            extra={"event": "export", "completed": self._completed, "bytes": self.export.bytes},
        )


class DisconnectAwareStream(StreamingResponse):
    """Streams while listening for the client's disconnect, whatever ASGI spec version the
    server speaks (Starlette only listens below 2.4), and cleans the export up the moment the
    response ends, instead of whenever the generator happens to be collected."""

    def __init__(self, running: RunningExport, **kwargs: Any) -> None:
        super().__init__(running.chunks(), **kwargs)
        self._running = running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream_then_stop() -> None:
                    await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream_then_stop)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
                await self._running.finish()  # if the stream never started


async def start_export(
    api: ApiState,
    slots: ExportSlots,
    tenant_id: uuid.UUID,
    journey_id: uuid.UUID,
    kind: str,
    fmt: str,
) -> Response:
    def journey_exists() -> bool:
        with api.engine.connect() as conn:
            return pages.journey_exists(conn, tenant_id, journey_id)

    if not await run_in_threadpool(journey_exists):
        raise not_found("journey")
    if not slots.try_acquire():
        raise ApiProblem(
            503,
            f"{slots.size} exports are running in this process already; try again later",
            type_=UNAVAILABLE,
            headers={"Retry-After": "30"},
        )
    try:
        export = CopyExport(
            api.engine,
            copy_statement(kind, fmt, tenant_id, journey_id),
            statement_timeout_ms=api.settings.export_statement_timeout_ms,
            read_only=True,
        )
        # A connection or statement problem still gets a proper answer (503, 500) here.
        await anyio.to_thread.run_sync(export.start)
    except BaseException:
        slots.release()
        raise
    label = f"{kind}.{fmt} journey={journey_id}"
    return DisconnectAwareStream(
        RunningExport(export, slots.release, label, 1 if fmt == "csv" else 0),
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="journey-{journey_id}-{kind}.{fmt}"',
            "Cache-Control": "no-store",
        },
    )


def _endpoint(kind: str, fmt: str) -> Callable[..., Awaitable[Response]]:
    async def export(api: State, tenant_id: TenantId, journey_id: uuid.UUID) -> Response:
        return await start_export(api, api.exports, tenant_id, journey_id, kind, fmt)

    export.__name__ = f"export_{kind}_{fmt}"
    return export


_DESCRIPTIONS = {
    "csv": "CSV with a header row ({columns}); timestamps in UTC, ISO 8601.",
    "jsonl": "One JSON object per line with the fields {columns}; timestamps in UTC, ISO 8601.",
}

for _kind in EXPORT_KINDS:
    for _fmt in EXPORT_FORMATS:
        _columns = ",".join(header(_kind))
        router.add_api_route(
            f"/journeys/{{journey_id}}/{_kind}.{_fmt}",
            _endpoint(_kind, _fmt),
            methods=["GET"],
            summary=f"Export a journey's {_kind} as {_fmt.upper()}",
            description=_DESCRIPTIONS[_fmt].format(columns=_columns)
            + " Streamed; a transfer cut short is an incomplete export.",
            response_class=Response,
            responses={
                200: {
                    "description": f"The journey's {_kind}",
                    "content": {MEDIA_TYPES[_fmt]: {"schema": {"type": "string"}}},
                }
            },
        )
