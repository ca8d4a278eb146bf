"""Errors as RFC 9457 problem details (application/problem+json), for every status the API
answers with: 400, 401, 404, 405, 422, 500, 503. Each carries the request id, so a client's
report can be matched with the server's log line; a 500 says nothing else about the failure."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import current_request_id

PROBLEM_JSON = "application/problem+json"
# Problem types of this API (docs/api.md lists them); plain HTTP errors are about:blank.
INVALID_CURSOR = "urn:journey-worker:problem:invalid-cursor"
INVALID_PARAMETERS = "urn:journey-worker:problem:invalid-parameters"
UNAUTHORIZED = "urn:journey-worker:problem:unauthorized"
NOT_FOUND = "urn:journey-worker:problem:not-found"
UNAVAILABLE = "urn:journey-worker:problem:unavailable"
INTERNAL = "urn:journey-worker:problem:internal"

log = logging.getLogger("journey_worker.api")


class Problem(BaseModel):
    """RFC 9457 problem details, as this API sends them."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


class ApiProblem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_
        self.headers = headers or {}


def problem_response(
    request: Request,
    status: int,
    detail: str | None,
    *,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "instance": request.url.path,
        "request_id": current_request_id(),
    }
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def not_found(what: str) -> ApiProblem:
    # The same words for "does not exist" and "another tenant's": nothing to tell them apart.
    return ApiProblem(404, f"no such {what}", type_=NOT_FOUND)


async def _api_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(request, exc.status, exc.detail, type_=exc.type, headers=exc.headers)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    return problem_response(request, exc.status_code, detail, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Where and what, never the input itself (it may be a key pasted in the wrong place).
    errors = [
        {
            "in": str(e["loc"][0]),
            "name": ".".join(str(part) for part in e["loc"][1:]),
            "message": e["msg"],
        }
        for e in exc.errors()
    ]
    names = ", ".join(sorted({e["name"] or e["in"] for e in errors}))
    return problem_response(
        request,
        422,
        f"invalid request parameter(s): {names}",
        type_=INVALID_PARAMETERS,
        errors=errors,
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s: %s", type(exc).__name__, str(exc).splitlines()[0])
    return problem_response(
        request,
        503,
        "the database is busy or unreachable; try again shortly",
        type_=UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


class InternalErrorMiddleware:
    """Any other exception: a 500 problem naming the request id, and the traceback in the log.
    Inside RequestContextMiddleware (unlike Starlette's own error handler), so both still know
    the request id. Once a response has started (an export mid-stream) there is nothing left to
    answer: the exception goes on, and the server drops the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
            if started:
                raise
            request_id = current_request_id()
            body = {
                "type": INTERNAL,
                "title": HTTPStatus(500).phrase,
                "status": 500,
                "detail": "internal error; the server's log has the details under request id "
                f"{request_id}",
                "instance": scope.get("path"),
                "request_id": request_id,
            }
            response = JSONResponse(body, status_code=500, media_type=PROBLEM_JSON)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(OperationalError, _database_unavailable)


# For the OpenAPI document: what each error answer looks like.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": description, "content": {PROBLEM_JSON: {}}}
    for status, description in (
        (400, "A malformed or altered cursor"),
        (401, "No key, or an unknown key"),
        (404, "Unknown, or another tenant's"),
        (422, "Invalid parameters (limit out of range, unknown status, malformed id)"),
        (500, "Internal error (details in the server's log under the request id)"),
        (503, "The database is busy or unreachable"),
    )
}
