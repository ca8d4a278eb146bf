"""Pagination cursors: opaque to clients, tamper-evident, bound to one listing of one tenant.

A cursor is base64url(JSON payload + HMAC-SHA256 tag, first 16 bytes). The payload names the
listing it belongs to (tenant, endpoint, parent id, filter) and the (created_at, id) the next page
starts after. A cursor altered, truncated, or taken from another listing or another tenant fails
verification: the API answers 400, it is never run as a query.

The secret is API_CURSOR_SECRET, or else derived from API_KEYS' digests, so every API process of
a deployment accepts every other's cursors; changing the keys (or the secret) invalidates the
cursors in flight, and clients start again from the first page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from datetime import datetime

from db.pages import Keyset

TAG_BYTES = 16
MAX_CURSOR_LENGTH = 512


class CursorError(ValueError):
    """The cursor cannot be used; the message says why without echoing it."""


def derived_secret(key_digests: Iterable[bytes]) -> bytes:
    material = b"journey-worker cursor v1\0" + b"".join(sorted(key_digests))
    return hashlib.sha256(material).digest()


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:TAG_BYTES]

    def encode(self, listing: str, key: Keyset) -> str:
        payload = json.dumps(
            {"l": listing, "c": key.created_at.isoformat(), "i": str(key.id)},
            separators=(",", ":"),
        ).encode()
        return base64.urlsafe_b64encode(payload + self._tag(payload)).rstrip(b"=").decode()

    def decode(self, listing: str, cursor: str) -> Keyset:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise CursorError("the cursor is too long")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise CursorError("the cursor is not valid base64url") from None
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if len(raw) <= TAG_BYTES or not hmac.compare_digest(tag, self._tag(payload)):
            raise CursorError("the cursor was altered, or was issued by another deployment")
        data = json.loads(payload)
        if data.get("l") != listing:
            raise CursorError("the cursor belongs to another listing")
        created_at = datetime.fromisoformat(data["c"])
        if created_at.tzinfo is None:
            raise CursorError("the cursor carries no time zone")
        return Keyset(created_at, uuid.UUID(data["i"]))
