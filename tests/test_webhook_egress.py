"""Webhooks reach public addresses only: the check at the connection layer, after resolution.

No test here sends a packet anywhere but loopback. Every non-loopback range is exercised at
the resolution and classification layer: a resolver the test controls maps names to those
addresses, and the connecting layer is replaced by one that never connects (and must not even
be reached when the address is refused). Real connections go only to loopback addresses, to a
local server that records every request that arrives: a refused one must record nothing, and
the same URL through the operator's client (no address rule) shows it would have arrived.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpcore
import pytest
import trustme
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select

from db.models import JourneyNodeExecution
from tasks import circuit_breaker, http
from tasks.egress_policy import AddressPolicy, parse_allowed_networks
from tasks.errors import InvalidNodeConfig
from tasks.http import (
    HttpEgress,
    PermanentHttpError,
    TransientHttpError,
    WebhookAddressForbidden,
    provider_egress,
    webhook_egress,
)
from tasks.node_config import parse_node_config
from tasks.settings import EngineSettings
from tests.engine_harness import next_steps, row_counts, run_step
from tests.factories import make_contacts, make_journey, make_journey_contact, make_tenant
from tests.http_stub import HttpStub, Reply, http_stub
from tests.test_egress_policy import FORBIDDEN

# --- the test's DNS and a connecting layer that never connects --------------------------------


class Resolver:
    """Answers from a table: a list of addresses, or a function called on each lookup."""

    def __init__(self, answers: dict[str, list[str] | Callable[[], list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[Any]:
        self.lookups.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.answers[host]
        return [ipaddress.ip_address(a) for a in (answer() if callable(answer) else answer)]


class NoConnection(httpcore.NetworkBackend):
    """Stands in for the socket layer: records what it was asked and never connects."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int, float | None]] = []

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        self.attempts.append((host, port, timeout))
        raise httpcore.ConnectError("the test's connector never connects")


class RecordingConnector(httpcore.NetworkBackend):
    """The real socket layer (loopback only in these tests), recording each connection."""

    def __init__(self) -> None:
        self.inner = httpcore.SyncBackend()
        self.attempts: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.NetworkStream:
        self.attempts.append((host, port))
        return self.inner.connect_tcp(host, port, **kwargs)


def guarded(
    allowed: str = "",
    resolver: Resolver | None = None,
    connector: httpcore.NetworkBackend | None = None,
    **options: Any,
) -> HttpEgress:
    extra: dict[str, Any] = {"resolver": resolver} if resolver is not None else {}
    return HttpEgress(
        AddressPolicy(parse_allowed_networks(allowed)), connector=connector, **extra, **options
    )


def call(egress: HttpEgress, url: str, timeout: float = 2) -> Any:
    return egress.call_json(url, {"hello": 1}, timeout=timeout, idempotency_key="k")


def refusals(range_name: str) -> float:
    value = REGISTRY.get_sample_value(
        "journey_worker_webhook_refusals_total", {"range": range_name}
    )
    return value or 0.0


# --- 1. after resolution: every range, no traffic ---------------------------------------------


@pytest.mark.parametrize(("address", "range_name"), FORBIDDEN)
def test_a_name_resolving_to_a_non_public_address_is_refused_before_connecting(
    address: str, range_name: str
) -> None:
    resolver, connector = Resolver({"hooks.tenant.example": [address]}), NoConnection()
    before = refusals(range_name)
    with pytest.raises(WebhookAddressForbidden) as caught:
        call(guarded(resolver=resolver, connector=connector), "https://hooks.tenant.example/in")
    assert caught.value.reason == "webhook_address_forbidden: hooks.tenant.example"
    assert resolver.lookups == ["hooks.tenant.example"]
    assert connector.attempts == []
    assert refusals(range_name) == before + 1


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/?x=1", "169.254.169.254"),
        ("http://10.0.0.5/admin", "10.0.0.5"),
        ("http://127.0.0.1:5432/", "127.0.0.1"),
        ("http://[::1]:6379/", "::1"),
        ("http://[fd00::1]:8080/x", "fd00::1"),
        ("http://[fe80::1]/", "fe80::1"),
        ("http://[::ffff:10.0.0.5]/", "::ffff:10.0.0.5"),
        ("http://[::ffff:a9fe:a9fe]/", "::ffff:a9fe:a9fe"),
        ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe"),
        ("http://[2002:a00:5::1]/", "2002:a00:5::1"),
        ("http://100.64.1.1/", "100.64.1.1"),
        ("http://0x0a000005/", "0x0a000005"),
        ("http://167772165/", "167772165"),  # 10.0.0.5 in decimal
        ("https://192.168.1.1:8443/hook", "192.168.1.1"),
    ],
)
def test_a_literal_forbidden_address_is_refused_without_a_lookup(url: str, host: str) -> None:
    resolver, connector = Resolver({}), NoConnection()
    with pytest.raises(WebhookAddressForbidden) as caught:
        call(guarded(resolver=resolver, connector=connector), url)
    assert caught.value.reason == f"webhook_address_forbidden: {host}"
    assert resolver.lookups == [] and connector.attempts == []


def test_one_non_public_answer_refuses_the_whole_name() -> None:
    resolver = Resolver({"mixed.example": ["8.8.8.8", "10.0.0.5", "1.1.1.1"]})
    connector = NoConnection()
    with pytest.raises(WebhookAddressForbidden):
        call(guarded(resolver=resolver, connector=connector), "https://mixed.example/")
    assert connector.attempts == []


def test_a_public_name_is_connected_to_at_the_checked_address() -> None:
    resolver = Resolver({"hooks.example.com": ["8.8.4.4", "2606:4700:4700::1111"]})
    connector = NoConnection()
    with pytest.raises(TransientHttpError) as caught:
        call(guarded(resolver=resolver, connector=connector), "https://hooks.example.com/x", 3)
    # The socket layer is handed the addresses that were checked, never the name again.
    assert [(h, p) for h, p, _ in connector.attempts] == [
        ("8.8.4.4", 443),
        ("2606:4700:4700::1111", 443),
    ]
    # Within the call's budget, and capped for connecting.
    assert all(t is not None and 0 < t <= 3 for _, _, t in connector.attempts)
    assert caught.value.request_sent is False  # nothing connected: provably not received


def test_dns_rebinding_cannot_slip_a_second_answer_past_the_check() -> None:
    # The name answers a public address first, then loopback: the classic rebinding attack
    # on "check the name, then let the client resolve it again".
    answers = iter([["8.8.4.4"], ["127.0.0.1"], ["8.8.4.4"]])
    resolver = Resolver({"rebind.example": lambda: next(answers)})
    connector = NoConnection()
    egress = guarded(resolver=resolver, connector=connector)
    with pytest.raises(TransientHttpError):
        call(egress, "http://rebind.example/")
    assert resolver.lookups == ["rebind.example"]  # one lookup per connection, the one checked
    assert [h for h, _, _ in connector.attempts] == ["8.8.4.4"]
    with pytest.raises(WebhookAddressForbidden):
        call(egress, "http://rebind.example/")  # the next connection sees the new answer
    assert [h for h, _, _ in connector.attempts] == ["8.8.4.4"]


def test_an_ipv4_mapped_answer_is_connected_to_as_ipv4() -> None:
    connector = NoConnection()
    resolver = Resolver({"mapped.example": ["::ffff:8.8.8.8"]})
    with pytest.raises(TransientHttpError):
        call(guarded(resolver=resolver, connector=connector), "http://mapped.example:8080/")
    assert [(h, p) for h, p, _ in connector.attempts] == [("8.8.8.8", 8080)]


def test_an_allowed_network_lets_its_addresses_through_to_the_connector() -> None:
    resolver = Resolver({"crm.internal": ["10.20.0.7"], "db.internal": ["10.30.0.1"]})
    connector = NoConnection()
    egress = guarded("10.20.0.0/16", resolver=resolver, connector=connector)
    with pytest.raises(TransientHttpError):
        call(egress, "http://crm.internal/hook")
    with pytest.raises(WebhookAddressForbidden):
        call(egress, "http://db.internal/hook")
    assert [h for h, _, _ in connector.attempts] == ["10.20.0.7"]


def test_refusals_leave_the_pool_usable(stub) -> None:
    # A refusal is raised from inside the connection pool: it must give its slot back, or
    # LIMITS.max_connections refusals would leave every later call waiting for a connection.
    resolver = Resolver({"internal.example": ["10.0.0.5"], "receiver.example": ["127.0.0.1"]})
    egress = guarded("127.0.0.0/8", resolver=resolver)
    for _ in range(http.LIMITS.max_connections + 5):
        with pytest.raises(WebhookAddressForbidden):
            call(egress, f"http://internal.example:{stub.port}/")
    assert call(egress, f"http://receiver.example:{stub.port}/in").status == 200
    assert [r.path for r in stub.requests] == ["/in"]


def test_an_unresolvable_name_is_a_transient_error_that_never_connected() -> None:
    connector = NoConnection()
    with pytest.raises(
        TransientHttpError, match=re.escape("cannot resolve nowhere.example")
    ) as caught:
        call(guarded(resolver=Resolver({}), connector=connector), "http://nowhere.example/")
    assert caught.value.request_sent is False and connector.attempts == []


def test_a_refusal_is_logged_and_stored_without_credentials_or_query(caplog) -> None:
    resolver = Resolver({"metadata.internal": ["169.254.169.254"]})
    url = "http://admin:s3cret-pass@metadata.internal/latest/meta-data/?token=s3cret-token"
    with (
        caplog.at_level(logging.WARNING, logger="journey_worker.http"),
        pytest.raises(WebhookAddressForbidden) as caught,
    ):
        call(guarded(resolver=resolver, connector=NoConnection()), url)
    assert caught.value.reason == "webhook_address_forbidden: metadata.internal"
    [record] = [r for r in caplog.records if r.name == "journey_worker.http"]
    line = record.getMessage()
    assert "metadata.internal" in line and "169.254.169.254" in line and "link_local" in line
    assert "http://metadata.internal/latest/meta-data/" in line
    assert "s3cret" not in line and "admin" not in line


# --- 2. real connections, loopback only -------------------------------------------------------


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with http_stub() as server:
        yield server


@pytest.fixture
def operator_client() -> Iterator[HttpEgress]:
    client = HttpEgress(None)
    yield client
    client.close()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


# How a tenant can spell "this machine"; bind: the loopback address the stub listens on.
LOOPBACK_FORMS = [
    ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
    ("localhost", "127.0.0.1", "localhost"),
    ("[::ffff:127.0.0.1]", "127.0.0.1", "::ffff:127.0.0.1"),
    ("0.0.0.0", "127.0.0.1", "0.0.0.0"),  # Linux connects "any" to the local host
    ("2130706433", "127.0.0.1", "2130706433"),
    ("127.0.0.2", "127.0.0.2", "127.0.0.2"),
    ("[::1]", "::1", "::1"),
]


@pytest.mark.parametrize(("host", "bind", "reason_host"), LOOPBACK_FORMS)
def test_every_spelling_of_loopback_is_refused_and_nothing_arrives(
    host: str, bind: str, reason_host: str, operator_client: HttpEgress
) -> None:
    if ":" in bind and not ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    with http_stub(bind) as server:
        url = f"http://{host}:{server.port}/hook?token=t"
        with pytest.raises(WebhookAddressForbidden) as caught:
            call(guarded(), url)
        assert caught.value.reason == f"webhook_address_forbidden: {reason_host}"
        assert server.requests == []
        # The control: without the rule, this very URL reaches the server.
        operator_client.call_json(url, {}, timeout=2, idempotency_key="control")
        assert [r.path for r in server.requests] == ["/hook?token=t"]


@pytest.mark.parametrize(
    ("host", "bind", "arrives"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("localhost", "127.0.0.1", True),
        ("[::ffff:127.0.0.1]", "127.0.0.1", True),
        ("2130706433", "127.0.0.1", True),
        ("127.0.0.2", "127.0.0.2", True),
        ("0.0.0.0", "127.0.0.1", False),  # unspecified, not in 127.0.0.0/8
        ("[::1]", "::1", False),  # IPv6 loopback is another network
    ],
)
def test_an_allowed_network_lets_requests_arrive_and_only_there(
    host: str, bind: str, arrives: bool
) -> None:
    if ":" in bind and not ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    with http_stub(bind) as server:
        url = f"http://{host}:{server.port}/hook"
        egress = guarded("127.0.0.0/8")
        if arrives:
            assert call(egress, url).status == 200
            [request] = server.requests
            assert (request.path, request.json()) == ("/hook", {"hello": 1})
        else:
            with pytest.raises(WebhookAddressForbidden):
                call(egress, url)
            assert server.requests == []


def test_a_single_allowed_address_is_a_slash_32() -> None:
    with http_stub("127.0.0.2") as allowed, http_stub("127.0.0.3") as other:
        egress = guarded("127.0.0.2")
        assert call(egress, allowed.url_for("/in")).status == 200
        with pytest.raises(WebhookAddressForbidden):
            call(egress, other.url_for("/in"))
        assert len(allowed.requests) == 1 and other.requests == []


def test_a_redirect_to_an_internal_address_is_never_followed(stub) -> None:
    resolver = Resolver({"hooks.example.test": ["127.0.0.1"]})
    connector = RecordingConnector()
    stub.script(Reply(302, headers={"Location": "http://metadata.internal/latest/meta-data/"}))
    egress = guarded("127.0.0.0/8", resolver=resolver, connector=connector)
    with pytest.raises(
        PermanentHttpError, match=re.escape("HTTP 302 from http://hooks.example.test")
    ):
        call(egress, f"http://hooks.example.test:{stub.port}/hook")
    assert resolver.lookups == ["hooks.example.test"]
    assert connector.attempts == [("127.0.0.1", stub.port)]
    assert len(stub.requests) == 1


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


def test_tls_verifies_and_sends_sni_for_the_host_name_not_the_address(tls_ca) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("hooks.example.test").configure_cert(server_context)
    client_context = ssl.create_default_context()
    tls_ca.configure_trust(client_context)
    resolver = Resolver({"hooks.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]})
    connector = RecordingConnector()
    egress = guarded("127.0.0.0/8", resolver=resolver, connector=connector, verify=client_context)
    with http_stub(tls=server_context) as server:
        response = call(egress, f"https://hooks.example.test:{server.port}/hook")
        assert response.status == 200
        # Connected to the checked address; TLS spoke to (and verified) the name. The
        # certificate names no IP, so verifying against the address would have failed.
        assert connector.attempts == [("127.0.0.1", server.port)]
        assert server.server_names == ["hooks.example.test"]
        assert len(server.requests) == 1

        # Same address, another name: the certificate does not match, nothing is sent.
        with pytest.raises(TransientHttpError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            call(egress, f"https://other.example.test:{server.port}/hook")
        assert caught.value.request_sent is False
        assert len(server.requests) == 1


def test_proxies_from_the_environment_are_not_used(stub, monkeypatch) -> None:
    # A proxy would connect on the worker's behalf to addresses it never checked.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9/")
    assert call(guarded("127.0.0.0/8"), stub.url_for("/direct")).status == 200
    assert [r.path for r in stub.requests] == ["/direct"]


# --- 3. webhook steps: a refusal fails the contact once, with the reason -----------------------


def webhook_journey(engine: Engine, url: str) -> Any:
    tenant_id = make_tenant(engine)
    hook = {"url": url, "method": "POST", "timeout_seconds": 2}
    fixture = make_journey(
        engine,
        tenant_id,
        [
            ("hello", "update_contact", {"set": {"stage": "hooked"}}, "hook"),
            ("hook", "webhook", hook, "after"),
            ("after", "update_contact", {"set": {"stage": "after"}}, None),
        ],
    )
    fixture.contacts = make_contacts(engine, tenant_id, 1)
    jc = make_journey_contact(engine, fixture, fixture.contacts[0])
    [following] = next_steps(run_step(tenant_id, jc, fixture.nodes["hello"], 0))
    assert following["step"] == 1
    return fixture, jc


def hook_executions(engine: Engine, node_id: uuid.UUID) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            select(JourneyNodeExecution.status, JourneyNodeExecution.error).where(
                JourneyNodeExecution.node_id == node_id
            )
        ).all()


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/stub", "127.0.0.1"),  # a real local server: nothing may arrive
        ("http://169.254.169.254/latest/meta-data/?token=abc", "169.254.169.254"),
        ("http://10.0.0.5/admin", "10.0.0.5"),
        ("http://[::1]:6379/", "::1"),
        ("http://127.0.0.1:5432/", "127.0.0.1"),
    ],
)
def test_a_forbidden_webhook_fails_the_contact_for_good_with_the_reason(
    pg_engine, stub, path: str, host: str
) -> None:
    url = stub.url_for("/hook?token=s3cret") if path == "/stub" else path
    journey, jc = webhook_journey(pg_engine, url)
    outcome = run_step(journey.tenant_id, jc, journey.nodes["hook"], 1)  # no allow-list

    reason = f"webhook_address_forbidden: {host}"
    assert (outcome.outcome, outcome.detail, outcome.contact_status) == (
        "failed",
        reason,
        "FAILED",
    )
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["reason"]) == ("FAILED", reason)
    assert hook_executions(pg_engine, journey.nodes["hook"]) == [("FAILED", reason)]
    assert stub.requests == []
    # A redelivery of the message finds the step taken: no second try, ever.
    assert run_step(journey.tenant_id, jc, journey.nodes["hook"], 1).outcome == "duplicate"
    assert stub.requests == []


def test_a_name_resolving_to_the_metadata_service_fails_the_contact(pg_engine) -> None:
    resolver = Resolver({"metadata.tenant-hooks.example": ["169.254.169.254"]})
    connector = NoConnection()
    egress = guarded(resolver=resolver, connector=connector)
    journey, jc = webhook_journey(pg_engine, "https://metadata.tenant-hooks.example/in?k=v")
    outcome = run_step(journey.tenant_id, jc, journey.nodes["hook"], 1, http=egress.call_json)
    reason = "webhook_address_forbidden: metadata.tenant-hooks.example"
    assert (outcome.outcome, outcome.detail) == ("failed", reason)
    assert row_counts(pg_engine, jc)["reason"] == reason
    assert connector.attempts == []


def test_an_allowed_receiver_is_called_and_the_journey_goes_on(pg_engine, stub) -> None:
    journey, jc = webhook_journey(pg_engine, stub.url_for("/hook"))
    settings = EngineSettings(webhook_allowed_networks=parse_allowed_networks("127.0.0.0/8"))
    outcome = run_step(journey.tenant_id, jc, journey.nodes["hook"], 1, settings=settings)
    assert (outcome.outcome, outcome.execution_status) == ("executed", "COMPLETED")
    assert [r.path for r in stub.requests] == ["/hook"]


def test_an_invalid_webhook_url_is_rejected_without_echoing_it() -> None:
    for url in ("ftp://user:pw@host.example/?token=abc", "http:///?token=abc", "http://a b/"):
        with pytest.raises(InvalidNodeConfig) as caught:
            parse_node_config("webhook", {"url": url})
        assert "pw" not in caught.value.reason and "abc" not in caught.value.reason


# --- 4. one client per process, never shared across fork --------------------------------------


def test_clients_are_created_once_per_process_and_purpose() -> None:
    allowed = parse_allowed_networks("127.0.0.0/8")
    assert webhook_egress() is webhook_egress()
    assert webhook_egress(allowed) is webhook_egress(allowed)
    assert webhook_egress(allowed) is not webhook_egress()
    assert provider_egress() is provider_egress()
    assert provider_egress().policy is None and webhook_egress().policy == AddressPolicy()


def test_worker_process_init_forgets_clients_and_breakers() -> None:
    from worker import signals

    client = provider_egress()
    breaker = circuit_breaker.breaker_for("http://provider.test/sms", 3, 30.0)
    signals._reset_connections_in_child()
    assert provider_egress() is not client
    assert circuit_breaker.breaker_for("http://provider.test/sms", 3, 30.0) is not breaker


def test_a_forked_child_never_reuses_the_parents_pooled_connection(stub) -> None:
    stub.script(then=Reply(200, keep_alive=True))
    parent_client = provider_egress()
    parent_client.call_json(stub.url_for("/parent"), {}, timeout=2, idempotency_key="p")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest here, only an exit code
        code = 1
        try:
            # No worker_process_init in a bare fork: the pid check alone must catch it.
            child_client = provider_egress()
            child_client.call_json(stub.url_for("/child"), {}, timeout=2, idempotency_key="c")
            code = 0 if child_client is not parent_client else 2
        finally:
            os.write(write_end, bytes([code]))
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"\x00" and os.waitstatus_to_exitcode(status) == 0
    os.close(read_end)
    parent_client.call_json(stub.url_for("/parent"), {}, timeout=2, idempotency_key="p")
    ports = {r.path: set() for r in stub.requests}
    for r in stub.requests:
        ports[r.path].add(r.client_port)
    # The parent kept its one pooled connection; the child opened its own.
    assert len(ports["/parent"]) == 1 and ports["/child"].isdisjoint(ports["/parent"])
    http.reset_after_fork()  # leave this process with fresh clients for later tests
