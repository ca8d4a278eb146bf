"""What every endpoint needs: the caller's tenant, the database, cursors."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import Engine

from api.auth import KeyRing
from api.context import current
from api.cursor import CursorCodec, CursorError
from api.problems import INVALID_CURSOR, UNAUTHORIZED, ApiProblem
from api.settings import ApiSettings
from db.pages import Keyset

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="journey-worker"'}


class ExportSlots:
    """At most API_MAX_EXPORTS exports at once per process: each holds a pooled connection for
    its whole length, and the pages must keep some."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore = threading.BoundedSemaphore(size)

    def try_acquire(self) -> bool:
        return self._semaphore.acquire(blocking=False)

    def release(self) -> None:
        self._semaphore.release()


@dataclass(frozen=True)
class ApiState:
    settings: ApiSettings
    engine: Engine
    keys: KeyRing
    cursors: CursorCodec
    exports: ExportSlots


def state(request: Request) -> ApiState:
    return request.app.state.api  # type: ignore[no-any-return]


async def tenant(
    request: Request,
    authorization: Annotated[
        str | None, Header(description="`Bearer KEY`, a key of API_KEYS.")
    ] = None,
) -> uuid.UUID:
    """The tenant whose key the request carries; 401 otherwise. (Async: a hash and a few
    comparisons need no thread.)"""
    if not authorization:
        raise ApiProblem(
            401, "missing Authorization: Bearer KEY", type_=UNAUTHORIZED, headers=CHALLENGE
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiProblem(
            401,
            "the Authorization header must be Bearer KEY",
            type_=UNAUTHORIZED,
            headers=CHALLENGE,
        )
    tenant_id = state(request).keys.tenant_for(token.strip())
    if tenant_id is None:
        raise ApiProblem(401, "unknown API key", type_=UNAUTHORIZED, headers=CHALLENGE)
    context = current()
    if context is not None:
        context.tenant_id = str(tenant_id)
    return tenant_id


TenantId = Annotated[uuid.UUID, Depends(tenant)]
State = Annotated[ApiState, Depends(state)]


def decode_cursor(api: ApiState, listing: str, cursor: str | None) -> Keyset | None:
    if not cursor:  # absent or empty: the first page
        return None
    try:
        return api.cursors.decode(listing, cursor)
    except CursorError as exc:
        raise ApiProblem(
            400, f"invalid cursor: {exc}; start again without one", type_=INVALID_CURSOR
        ) from None


def encode_cursor(api: ApiState, listing: str, key: Keyset | None) -> str | None:
    return api.cursors.encode(listing, key) if key is not None else None
