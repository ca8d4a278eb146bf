"""Outbound HTTP for webhooks and the SMS provider: JSON with an Idempotency-Key, bounded in time
and size, and one verdict per outcome.

One pooled httpx client per process and purpose, created on first use and forgotten in a forked
child (worker/signals.py; the pid check below catches any other fork), so a child never
shares a pooled socket with its parent. Two purposes:

* webhooks, whose URLs tenants write: connections go through tasks/egress_network.py, which
  refuses every non-public address unless WEBHOOK_ALLOWED_NETWORKS allows it;
* the SMS provider, whose URLs the operator configures: any address, same verdicts.

Verdicts: 2xx returns. 408, 409, 425, 429 and every 5xx, timeouts and connection errors raise
TransientHttpError (Celery retries); every other status, redirects included, raises
PermanentHttpError. Redirects are never followed: a 3xx would otherwise be a second request to a
URL nobody checked, and a redirected POST can lose its body while passing for a delivery.
URLs in errors and logs keep scheme, host and path only: credentials and query strings (where
tokens usually live) never reach a stored reason or a log line.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from tasks import metrics
from tasks.egress_network import AddressRefused, EgressBackend, Resolver, deadline, system_resolver
from tasks.egress_policy import AddressPolicy, IPNetwork, literal_address
from tasks.errors import PermanentError, TransientError

log = logging.getLogger("journey_worker.http")

# Worth another try: the server is overloaded, rate-limiting, or timed out on its side.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
# At most this much of a response is read (then the connection is dropped); none of it is
# stored: a webhook's execution keeps the status, a provider's answer its message id.
MAX_RESPONSE_BYTES = 64 * 1024
# Connecting takes a round trip or two; a host that has not answered in 5 s is not there.
CONNECT_TIMEOUT_MAX = 5.0
# Waiting for a free pooled connection (each child runs one task at a time: never, in practice).
POOL_TIMEOUT = 2.0
LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30)


class PermanentHttpError(PermanentError):
    pass


class TransientHttpError(TransientError):
    """`request_sent` is False only when the request provably never reached the server
    (nothing connected: refused, unresolvable, connect timeout, TLS failure, no free
    connection); after anything else the server may have acted on it."""

    def __init__(self, reason: str, *, request_sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_sent = request_sent


class WebhookAddressForbidden(PermanentHttpError):
    def __init__(self, host: str) -> None:
        super().__init__(f"webhook_address_forbidden: {host}")
        self.host = host


@dataclass(frozen=True)
class HttpResponse:
    status: int
    # At most MAX_RESPONSE_BYTES, decoded leniently; `truncated` says whether more was sent.
    body: str
    truncated: bool = False

    def json(self) -> Any:
        """The body as JSON, or None if it is not (or was cut short)."""
        if self.truncated:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def safe_url(url: str) -> str:
    """scheme://host[:port]/path: no credentials, no query string, no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"


def url_host(url: str) -> str:
    """The host as the HTTP client connects to it (IDNA-encoded, IPv6 without brackets)."""
    try:
        return httpx.URL(url).host
    except httpx.InvalidURL:
        return urlsplit(url).hostname or ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


class _EgressTransport(httpx.HTTPTransport):
    """httpx's transport with our network backend under its connection pool (httpx takes no
    backend argument, so the pool it builds is replaced by an identical one that has it)."""

    def __init__(self, backend: EgressBackend, verify: ssl.SSLContext | bool) -> None:
        super().__init__(verify=verify, trust_env=False, limits=LIMITS)
        self._pool = httpcore.ConnectionPool(
            # trust_env here means SSL_CERT_FILE / SSL_CERT_DIR only, for a private CA.
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=True),
            max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections,
            keepalive_expiry=LIMITS.keepalive_expiry,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )


class HttpEgress:
    """One pooled client and the verdicts. `policy` None: no address is refused (the
    operator's own URLs); otherwise the policy decides, at connection time."""

    def __init__(
        self,
        policy: AddressPolicy | None,
        *,
        resolver: Resolver = system_resolver,
        connector: httpcore.NetworkBackend | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.policy = policy
        backend = EgressBackend(policy, resolver=resolver, connector=connector)
        self.client = httpx.Client(
            transport=_EgressTransport(backend, verify),
            follow_redirects=False,
            # No proxies from the environment (a proxy would connect on our behalf to addresses
            # this process never checks), and no ~/.netrc credentials sent to tenants' hosts.
            trust_env=False,
        )

    def close(self) -> None:
        self.client.close()

    def check_literal(self, url: str) -> None:
        """Refuse at once a URL whose host is an IP literal the policy refuses (no DNS, no
        connection). The connection-time check in EgressBackend is the one that matters."""
        if self.policy is None:
            return
        host = url_host(url)
        address = literal_address(host)
        refused = self.policy.refusal(address) if address is not None else None
        if address is not None and refused is not None:
            raise _refusal(url, AddressRefused(host, address, refused))

    def call_json(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        method: str = "POST",
        timeout: float,
        idempotency_key: str,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """Send payload as JSON within `timeout` seconds in all; the verdicts above."""
        where = safe_url(url)
        if urlsplit(url).scheme not in ("http", "https"):
            raise PermanentHttpError(f"not an http(s) URL: {where}")
        self.check_literal(url)
        data = json.dumps(payload, separators=(",", ":")).encode()
        request_headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "User-Agent": "journey-worker",
            # Raw bytes only: a compressed body could inflate far beyond the read limit.
            "Accept-Encoding": "identity",
            **(headers or {}),
        }
        limits = httpx.Timeout(
            connect=min(timeout, CONNECT_TIMEOUT_MAX),
            read=timeout,
            write=timeout,
            pool=POOL_TIMEOUT,
        )
        try:
            with (
                deadline(timeout),
                self.client.stream(
                    method, url, content=data, headers=request_headers, timeout=limits
                ) as response,
            ):
                body, truncated = _read_bounded(response)
                status = response.status_code
        except AddressRefused as exc:
            raise _refusal(url, exc) from None
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientHttpError(
                f"{type(exc).__name__} calling {where}", request_sent=False
            ) from None
        except httpx.TimeoutException as exc:
            raise TransientHttpError(f"{type(exc).__name__} calling {where}") from None
        except httpx.ConnectError as exc:
            raise TransientHttpError(
                f"ConnectError calling {where}: {_first_line(exc)}", request_sent=False
            ) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise PermanentHttpError(f"cannot call {where}: {_first_line(exc)}") from None
        except httpx.TransportError as exc:
            raise TransientHttpError(
                f"{type(exc).__name__} calling {where}: {_first_line(exc)}"
            ) from None
        if 200 <= status < 300:
            return HttpResponse(status, body.decode(errors="replace"), truncated)
        detail = f"HTTP {status} from {where}"
        if status in RETRYABLE_STATUSES or 500 <= status < 600:
            raise TransientHttpError(detail)
        raise PermanentHttpError(detail)


def _read_bounded(response: httpx.Response) -> tuple[bytes, bool]:
    """At most MAX_RESPONSE_BYTES of the raw body; whether there was more."""
    received = bytearray()
    for chunk in response.iter_raw():
        room = MAX_RESPONSE_BYTES - len(received)
        received += chunk[:room]
        if len(chunk) > room:
            # Leaving the rest unread closes the connection instead of pooling it.
            return bytes(received), True
    return bytes(received), False


def _refusal(url: str, refused: AddressRefused) -> WebhookAddressForbidden:
    metrics.WEBHOOK_REFUSALS.labels(refused.range_name).inc()
    log.warning(
        "webhook refused: %s resolves to %s (%s); allow it with WEBHOOK_ALLOWED_NETWORKS "
        "only if it is your own receiver url=%s",
        refused.host,
        refused.address,
        refused.range_name,
        safe_url(url),
        extra={
            "event": "webhook_refused",
            "host": refused.host,
            "address": str(refused.address),
            "range": refused.range_name,
        },
    )
    return WebhookAddressForbidden(refused.host)


# --- one client per process and purpose -----------------------------------------------------

_lock = threading.Lock()
_clients: dict[tuple[str, tuple[IPNetwork, ...]], HttpEgress] = {}
_owner_pid = os.getpid()


def _shared(purpose: str, allowed_networks: tuple[IPNetwork, ...]) -> HttpEgress:
    key = (purpose, allowed_networks)
    with _lock:
        if os.getpid() != _owner_pid:
            _forget()
        egress = _clients.get(key)
        if egress is None:
            policy = AddressPolicy(allowed_networks) if purpose == "webhook" else None
            egress = _clients[key] = HttpEgress(policy)
        return egress


def webhook_egress(allowed_networks: tuple[IPNetwork, ...] = ()) -> HttpEgress:
    """The client for tenants' webhook URLs: public addresses, plus the allowed networks."""
    return _shared("webhook", tuple(allowed_networks))


def provider_egress() -> HttpEgress:
    """The client for the operator's SMS provider URLs: no address rule."""
    return _shared("provider", ())


def _forget() -> None:
    global _owner_pid
    # Not closed: the sockets are the parent's too, and closing TLS would write to them.
    _clients.clear()
    _owner_pid = os.getpid()


def reset_after_fork() -> None:
    """In a forked child: forget the parent's clients; the first call builds new ones."""
    global _lock
    # A fresh lock too: a thread of the parent may have held the old one at the fork.
    _lock = threading.Lock()
    _forget()
