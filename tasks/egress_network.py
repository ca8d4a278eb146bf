"""The connection layer of outbound HTTP: an httpcore network backend that resolves the host
itself, checks every address it got, and connects to a checked address.

Checking a URL's host before the request and then letting the HTTP library resolve it again
is not a check: DNS can answer differently the second time (DNS rebinding), and a name can
point anywhere. Here the one resolution is the one used: the addresses are checked and the
socket connects to one of those very addresses. httpcore still hands the original host name to
TLS (`start_tls(server_hostname=...)`), so SNI and certificate verification are for the name in
the URL, not for the IP.

The backend also enforces one deadline for a whole exchange (connect, TLS, send, receive):
httpx's timeouts bound each socket operation, so a server that drips a byte just inside the
read timeout could otherwise hold a worker for as long as it likes.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore

from tasks.egress_policy import IPV4_MAPPED, AddressPolicy, IPAddress, first_refusal

Resolver = Callable[[str, int], list[IPAddress]]

_deadline: ContextVar[float | None] = ContextVar("journey_worker_http_deadline", default=None)


class AddressRefused(Exception):
    """The host resolved to an address the policy refuses; nothing was sent."""

    def __init__(self, host: str, address: IPAddress, range_name: str) -> None:
        super().__init__(f"{host} resolves to {address} ({range_name})")
        self.host = host
        self.address = address
        self.range_name = range_name


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address getaddrinfo gives for the host, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # An IPv6 scope ("%eth0") only comes with link-local addresses, which are refused.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every connect, read and write inside gives up once `seconds` have passed in all."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _within_deadline(timeout: float | None, expired: type[Exception]) -> float | None:
    end = _deadline.get()
    if end is None:
        return timeout
    remaining = end - time.monotonic()
    if remaining <= 0:
        raise expired("the call's deadline passed")
    return remaining if timeout is None else min(timeout, remaining)


class DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation also ends at the exchange's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _within_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _within_deadline(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self.inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class EgressBackend(httpcore.NetworkBackend):
    """Resolve once, refuse if any address is refused by the policy (None: no policy, the
    operator's own URLs), then connect to the checked addresses in order.

    `resolver` and `connector` are replaceable so that tests can map names to any address and
    prove that a refused one is never connected to, without sending a packet anywhere."""

    def __init__(
        self,
        policy: AddressPolicy | None,
        *,
        resolver: Resolver = system_resolver,
        connector: httpcore.NetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.connector = connector or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        _within_deadline(timeout, httpcore.ConnectTimeout)
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        if self.policy is not None:
            refused = first_refusal(self.policy, addresses)
            if refused is not None:
                # One bad address refuses the name: no trying the next and hoping.
                raise AddressRefused(host, *refused)
        failure: Exception | None = None
        for address in addresses:
            # An IPv4-mapped address is an IPv4 address: connect to it as one.
            target = (
                ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
                if address in IPV4_MAPPED
                else address
            )
            try:
                stream = self.connector.connect_tcp(
                    str(target),
                    port,
                    timeout=_within_deadline(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return DeadlineStream(stream)
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for outbound HTTP")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
