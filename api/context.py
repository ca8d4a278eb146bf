"""Per-request context: the request id (X-Request-ID, accepted or generated, returned) and the
tenant, carried into every log line of the request, and one access line per request.

One mutable RequestContext per request, held by a ContextVar: code in the thread pool (sync
endpoints, export reads) gets a copy of the variable but the same object, so what the auth
dependency writes there the access line in the middleware reads.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
# What a caller may send: enough for UUIDs and tracing ids, nothing that could forge a log line.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger("journey_worker.api")


@dataclass
class RequestContext:
    request_id: str
    tenant_id: str | None = None


_current: ContextVar[RequestContext | None] = ContextVar("journey_worker_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    context = _current.get()
    return context.request_id if context else None


class RequestContextFilter(logging.Filter):
    """Adds request_id and tenant_id ("-" outside a request) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if not hasattr(record, "request_id"):
            record.request_id = context.request_id if context else "-"
        if not hasattr(record, "tenant_id"):
            record.tenant_id = (context.tenant_id or "-") if context else "-"
        return True


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1").strip()
            if _ACCEPTED.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(request_id_from(scope))
        token = _current.set(context)
        status = 0
        sent = 0
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(HEADER, context.request_id)
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "%s %s %s %d bytes %.1f ms",
                scope["method"],
                scope["path"],
                status or "-",
                sent,
                (time.perf_counter() - began) * 1000,
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "bytes": sent,
                    "duration_ms": round((time.perf_counter() - began) * 1000, 1),
                },
            )
            _current.reset(token)
