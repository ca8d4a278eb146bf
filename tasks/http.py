"""Outbound HTTP for webhooks and the SMS provider: JSON, an Idempotency-Key, clear verdicts."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tasks.errors import PermanentError, TransientError

# Worth another try: the server is overloaded, rate-limiting, or timed out on its side.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class PermanentHttpError(PermanentError):
    pass


class TransientHttpError(TransientError):
    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib turns a redirected POST into a GET without the body,
    so a 301/302/303 (an http:// URL moved to https://, say) would pass for a delivery that never
    happened. Unfollowed, a 3xx is an HTTPError and fails loudly as a permanent error."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: str


def call_json(
    url: str,
    payload: dict[str, Any],
    *,
    method: str = "POST",
    timeout: float,
    idempotency_key: str,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """Send payload as JSON. 2xx returns; 408/429/5xx, timeouts and connection errors raise
    TransientHttpError (retry); any other status, redirects included, raises PermanentHttpError
    (never retried)."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Idempotency-Key", idempotency_key)
    request.add_header("User-Agent", "journey-worker")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with _opener.open(request, timeout=timeout) as response:
            body = response.read(64 * 1024).decode(errors="replace")
            return HttpResponse(response.status, body)
    except urllib.error.HTTPError as exc:
        detail = f"HTTP {exc.code} from {url}"
        if exc.code in RETRYABLE_STATUSES:
            raise TransientHttpError(detail) from None
        raise PermanentHttpError(detail) from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransientHttpError(f"{type(reason).__name__} calling {url}: {reason}") from None
