"""A scripted HTTP server for outbound-call tests: a real socket on 127.0.0.1, a random port.

Each test scripts the replies in order (a status, or a Reply with a delay or a broken
response); once the script is used up every request gets `then` (200 unless told otherwise).
Every request is recorded as it arrives, before any delay, so a client that timed out is
still seen. It runs in a thread of the test process and serves worker processes as well.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    # Seconds to wait before answering: longer than the client's timeout is a timeout.
    delay: float = 0.0
    # Close the connection without sending a response at all.
    drop: bool = False
    # Announce this many more body bytes than are sent, then close (a truncated response).
    truncate: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    # Keep the connection open for the client's next request (HTTP/1.1 keep-alive).
    keep_alive: bool = False
    # Send the body one byte at a time, this many seconds apart (a slow-drip server).
    drip: float = 0.0
    # Hold the reply until the test sets this event (an interleaving the test controls).
    gate: threading.Event | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    # Header names lower-cased: HTTP header names are case-insensitive, and urllib sends
    # "Idempotency-key" for "Idempotency-Key".
    headers: dict[str, str]
    body: bytes
    received_at: float
    client_port: int = 0

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def idempotency_key(self) -> str | None:
        return self.header("Idempotency-Key")

    def json(self) -> Any:
        return json.loads(self.body)


class HttpStub:
    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._then = Reply()
        self._requests: list[RecordedRequest] = []
        self._closing = threading.Event()
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, 0), self._handler_class())
        self._scheme = "https" if tls is not None else "http"
        # The server names (SNI) TLS clients asked for, in order.
        self.server_names: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- scripting and inspection ------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{self._scheme}://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url_for(self, path: str) -> str:
        return self.url + path

    def script(self, *replies: int | Reply, then: int | Reply = 200) -> None:
        """Replace the script: these replies in order, then `then` for every later request."""
        with self._lock:
            self._script = deque(_reply(r) for r in replies)
            self._then = _reply(then)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_with_key(self, key: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.idempotency_key == key]

    def wait_for_requests(self, count: int, timeout: float = 10) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.requests
            if len(seen) >= count:
                return seen
            time.sleep(0.02)
        raise AssertionError(f"stub saw {len(self.requests)} requests, expected {count}")

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> HttpStub:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # delayed handlers stop waiting
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # --- the server side ---------------------------------------------------------------

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self._then

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stub._record(
                    RecordedRequest(
                        method=self.command,
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                        received_at=time.monotonic(),
                        client_port=int(self.client_address[1]),
                    )
                )
                reply = stub._next_reply()
                if reply.gate is not None:
                    while not reply.gate.wait(0.05):
                        if stub._closing.is_set():
                            self.close_connection = True
                            return
                if reply.delay and stub._closing.wait(reply.delay):
                    self.close_connection = True
                    return
                if reply.drop:
                    self.close_connection = True
                    return
                payload = (
                    reply.body.encode()
                    if isinstance(reply.body, str)
                    else json.dumps(reply.body).encode()
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    extra = 100 if reply.truncate else 0
                    self.send_header("Content-Length", str(len(payload) + extra))
                    if not reply.keep_alive:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    if reply.drip:
                        for index in range(len(payload)):
                            self.wfile.write(payload[index : index + 1])
                            self.wfile.flush()
                            if stub._closing.wait(reply.drip):
                                break
                    else:
                        self.wfile.write(payload)
                    self.wfile.flush()
                except OSError:
                    pass  # the client gave up (timed out) before the reply: expected
                self.close_connection = not reply.keep_alive

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test asserts on recorded requests instead

        return Handler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _reply(value: int | Reply) -> Reply:
    return value if isinstance(value, Reply) else Reply(status=value)


@contextmanager
def http_stub(host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Iterator[HttpStub]:
    """A stub on a loopback address (127.0.0.1 unless told: any of 127/8, or ::1); HTTPS
    with `tls` (a server context)."""
    stub = HttpStub(host, tls).start()
    try:
        yield stub
    finally:
        stub.close()


def closed_port_url(path: str = "/") -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
