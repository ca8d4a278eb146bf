"""SMS provider failover against real local servers on 127.0.0.1: one failing with 503, one
refusing connections, one healthy. The invariant: no message ever reaches two providers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, update

from db.models import Message
from tasks import circuit_breaker
from tasks.circuit_breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, breaker_for
from tasks.deliveries import deliver_message
from tasks.delivery import provider_message_id
from tasks.errors import TransientError
from tasks.http import TransientHttpError
from tasks.settings import EngineSettings, use_engine_settings
from tests.factories import JourneyFixture, make_contacts, make_journey, make_tenant
from tests.http_stub import HttpStub, Reply, closed_port_url, http_stub
from tests.test_http_delivery import message, queue_message
from tests.threads import threads

SMS = [("hello", "send_sms", {"body": "Hi {{first_name}}"}, None)]


@pytest.fixture(autouse=True)
def fresh_breakers() -> Iterator[None]:
    circuit_breaker.reset_after_fork()
    yield
    circuit_breaker.reset_after_fork()
    use_engine_settings(None)


@pytest.fixture
def journey(pg_engine: Engine) -> JourneyFixture:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(pg_engine, tenant_id, SMS)
    fixture.contacts = make_contacts(pg_engine, tenant_id, 12)
    return fixture


@pytest.fixture
def failing() -> Iterator[HttpStub]:
    """A provider that answers 503 until told otherwise."""
    with http_stub() as server:
        server.script(then=503)
        yield server


@pytest.fixture
def healthy() -> Iterator[HttpStub]:
    with http_stub() as server:
        server.script(then=Reply(200, body={"id": "ok"}))
        yield server


@pytest.fixture
def refusing() -> str:
    """A provider URL where nothing listens: every connection is refused."""
    return closed_port_url("/sms")


def use_providers(*urls: str, threshold: int = 3, cooldown: float = 30.0) -> None:
    use_engine_settings(
        EngineSettings(
            sms_provider="http",
            sms_provider_urls=",".join(urls),
            sms_provider_timeout=0.5,
            sms_provider_failure_threshold=threshold,
            sms_provider_cooldown_seconds=cooldown,
        )
    )


def queued(journey: JourneyFixture, engine: Engine, index: int) -> dict[str, str]:
    return queue_message(journey, journey.contacts[index], engine)


def deliver(kwargs: dict[str, str]) -> str:
    """One delivery attempt as Celery would run it: 'sent', 'failed', or the retry's error."""
    try:
        return deliver_message.run(**kwargs)["outcome"]
    except TransientError as exc:
        return f"retry: {exc}"


def keys(stub: HttpStub) -> set[str]:
    return {r.idempotency_key for r in stub.requests}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- failover -------------------------------------------------------------------------------


def test_a_refused_provider_fails_over_to_the_next_within_one_attempt(
    pg_engine, journey, refusing, healthy
) -> None:
    use_providers(refusing, healthy.url_for("/sms"))
    kwargs = queued(journey, pg_engine, 0)
    assert deliver(kwargs) == "sent"
    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.provider, row.provider_message_id, row.attempts) == (
        "SENT",
        healthy.url_for("/sms"),
        "ok",
        1,
    )
    assert keys(healthy) == {kwargs["message_id"]}


@pytest.mark.parametrize("fault", [Reply(503), Reply(200, delay=2)], ids=["503", "timeout"])
def test_an_ambiguous_failure_keeps_the_message_at_that_provider_until_it_answers(
    pg_engine, journey, failing, healthy, fault
) -> None:
    use_providers(failing.url_for("/sms"), healthy.url_for("/sms"))
    kwargs = queued(journey, pg_engine, 0)
    failing.script(fault, fault, then=200)

    for _ in range(2):
        assert deliver(kwargs).startswith("retry: ")
        row = message(pg_engine, kwargs["message_id"])
        # It may have been accepted there: committed to it, never handed to the next one.
        assert (row.status, row.provider) == ("QUEUED", failing.url_for("/sms"))
        assert healthy.requests == []

    assert deliver(kwargs) == "sent"
    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.provider, row.attempts) == ("SENT", failing.url_for("/sms"), 3)
    assert [r.idempotency_key for r in failing.wait_for_requests(3)] == [kwargs["message_id"]] * 3
    assert healthy.requests == []


def test_an_open_circuit_sends_new_messages_on_and_never_moves_committed_ones(
    pg_engine, journey, failing, healthy
) -> None:
    first_url, second_url = failing.url_for("/sms"), healthy.url_for("/sms")
    use_providers(first_url, second_url, threshold=2, cooldown=30)
    clock = FakeClock()
    breaker = breaker_for(first_url, 2, 30.0)
    breaker.clock = clock
    m1, m2, m3 = (queued(journey, pg_engine, i) for i in range(3))

    assert deliver(m1) == f"retry: HTTP 503 from {first_url}"
    assert deliver(m2) == f"retry: HTTP 503 from {first_url}"
    assert breaker.state == OPEN
    # A new message skips the open circuit without trying it, and goes to the next provider.
    assert deliver(m3) == "sent"
    assert message(pg_engine, m3["message_id"]).provider == second_url
    # A committed message waits for its provider instead: no call while the circuit is open.
    assert deliver(m1) == f"retry: sms_provider_circuit_open: {first_url}"
    assert keys(failing) == {m1["message_id"], m2["message_id"]}
    assert len(failing.requests) == 2

    clock.now += 30  # the cool-down is over: the first provider is tried again
    failing.script(then=200)
    assert breaker.state == HALF_OPEN
    assert deliver(m1) == "sent"
    assert breaker.state == CLOSED
    assert deliver(m2) == "sent"
    assert [message(pg_engine, m["message_id"]).provider for m in (m1, m2, m3)] == [
        first_url,
        first_url,
        second_url,
    ]
    assert keys(healthy) == {m3["message_id"]}
    assert keys(failing) == {m1["message_id"], m2["message_id"]}


def test_three_providers_no_message_reaches_two(
    pg_engine, journey, refusing, failing, healthy
) -> None:
    """A refuses connections, B answers 503 to its first four calls, C is healthy. Twelve
    messages are delivered as Celery would with all of them in flight: each round tries every
    message not yet sent, then the retries' backoff passes. Circuits open and half-open as
    they go. Every message ends SENT, recorded at the one provider that saw its key."""
    urls = {
        "refusing": refusing,
        "failing": failing.url_for("/sms"),
        "healthy": healthy.url_for("/sms"),
    }
    use_providers(urls["refusing"], urls["failing"], urls["healthy"], threshold=2, cooldown=30)
    clock = FakeClock()
    for url in urls.values():
        breaker_for(url, 2, 30.0).clock = clock
    failing.script(*[503] * 4, then=200)
    messages = [queued(journey, pg_engine, i) for i in range(12)]
    first_outcomes = [deliver(kwargs) for kwargs in messages]
    # The first two: refused by A (so moved on at once), then 503 from B: committed to B. By
    # then both circuits are open, and the other ten go straight to C.
    assert first_outcomes == [f"retry: HTTP 503 from {urls['failing']}"] * 2 + ["sent"] * 10

    pending = messages[:2]
    for _ in range(10):
        clock.now += 16  # the retries' backoff: two rounds outlast a cool-down
        pending = [kwargs for kwargs in pending if deliver(kwargs) != "sent"]
        if not pending:
            break
    assert pending == []

    seen = {name: keys(s) for name, s in (("failing", failing), ("healthy", healthy))}
    assert not seen["failing"] & seen["healthy"]
    assert (len(seen["failing"]), len(seen["healthy"])) == (2, 10)
    for kwargs in messages:
        row = message(pg_engine, kwargs["message_id"])
        [where] = [name for name, got in seen.items() if kwargs["message_id"] in got]
        assert (row.status, row.provider) == ("SENT", urls[where])
    # B was called only while its circuit allowed it: 2 first tries, 2 half-open trials
    # that failed, then the 2 that went through.
    assert len(failing.requests) == 6


def test_when_no_provider_is_reachable_the_message_stays_free_to_go_anywhere(
    pg_engine, journey, healthy
) -> None:
    down = [closed_port_url("/a"), closed_port_url("/b")]
    use_providers(*down)
    kwargs = queued(journey, pg_engine, 0)
    with pytest.raises(TransientError, match="no SMS provider reachable") as caught:
        deliver_message.run(**kwargs)
    assert "Connection refused" in str(caught.value)
    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.provider, row.attempts) == ("QUEUED", None, 1)
    assert row.error == str(caught.value)

    # Nothing reached anyone, so a later attempt may use a provider that is up.
    use_providers(down[0], healthy.url_for("/sms"))
    assert deliver(kwargs) == "sent"
    assert message(pg_engine, kwargs["message_id"]).provider == healthy.url_for("/sms")


def test_a_message_committed_before_a_crash_never_moves(
    pg_engine, journey, refusing, healthy
) -> None:
    # A worker killed mid-call leaves the message committed to the provider it was calling:
    # that provider may have accepted it, so even a refused connection now proves nothing.
    use_providers(refusing, healthy.url_for("/sms"))
    kwargs = queued(journey, pg_engine, 0)
    with pg_engine.begin() as conn:
        conn.execute(
            update(Message)
            .where(Message.id == uuid.UUID(kwargs["message_id"]))
            .values(provider=refusing)
        )
    for _ in range(3):
        outcome = deliver(kwargs)
        assert outcome.startswith("retry: ConnectError calling") and "refused" in outcome
    assert message(pg_engine, kwargs["message_id"]).provider == refusing
    assert healthy.requests == []


def test_a_message_committed_to_a_provider_no_longer_configured_fails_for_good(
    pg_engine, journey, healthy
) -> None:
    use_providers(healthy.url_for("/sms"))
    kwargs = queued(journey, pg_engine, 0)
    with pg_engine.begin() as conn:
        conn.execute(
            update(Message)
            .where(Message.id == uuid.UUID(kwargs["message_id"]))
            .values(provider="https://retired-provider.example/sms")
        )
    assert deliver(kwargs) == "failed"
    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.error) == (
        "FAILED",
        "sms_provider_not_configured: https://retired-provider.example/sms",
    )
    assert healthy.requests == []


def test_a_permanent_rejection_does_not_fail_over(pg_engine, journey, failing, healthy) -> None:
    failing.script(then=422)
    use_providers(failing.url_for("/sms"), healthy.url_for("/sms"))
    kwargs = queued(journey, pg_engine, 0)
    assert deliver(kwargs) == "failed"
    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.error) == ("FAILED", f"HTTP 422 from {failing.url_for('/sms')}")
    assert healthy.requests == []
    assert breaker_for(failing.url_for("/sms"), 3, 30.0).state == CLOSED  # it answered


def test_two_workers_delivering_one_message_call_the_provider_once(
    pg_engine, journey, healthy
) -> None:
    use_providers(healthy.url_for("/sms"))
    kwargs = queued(journey, pg_engine, 0)
    gate = threading.Event()
    healthy.script(Reply(200, body={"id": "SM-1"}, gate=gate), then=200)
    with threads() as pool:
        first = pool.start(deliver_message.run, **kwargs)
        healthy.wait_for_requests(1)  # the first worker is inside the provider call
        # The second holds the same message meanwhile: the first's lease turns it away at once.
        second = deliver_message.run(**kwargs)
        gate.set()
    assert second == {"outcome": "duplicate", "status": "QUEUED"}
    assert first.result == {"outcome": "sent"}
    assert len(healthy.requests) == 1
    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.provider_message_id, row.attempts) == ("SENT", "SM-1", 1)
    # A delivery arriving later finds the message sent.
    assert deliver_message.run(**kwargs) == {"outcome": "duplicate", "status": "SENT"}


# --- the default, and the operator's provider on loopback ---------------------------------------


def test_the_logging_provider_makes_up_an_id(pg_engine, journey) -> None:
    use_engine_settings(EngineSettings())
    kwargs = queued(journey, pg_engine, 0)
    assert deliver(kwargs) == "sent"
    row = message(pg_engine, kwargs["message_id"])
    assert (row.provider, row.provider_message_id) == ("log", f"log-{kwargs['message_id']}")


def test_the_operators_provider_on_loopback_needs_no_allow_list(
    pg_engine, journey, healthy
) -> None:
    # The tenant rule is for tenants' webhook URLs; the provider URL is the operator's own.
    use_engine_settings(
        EngineSettings(
            sms_provider="http",
            sms_provider_url=healthy.url_for("/sms"),
            webhook_allowed_networks=(),
        )
    )
    kwargs = queued(journey, pg_engine, 0)
    assert deliver(kwargs) == "sent"
    assert keys(healthy) == {kwargs["message_id"]}


# --- settings -----------------------------------------------------------------------------------


def test_provider_urls_from_the_environment() -> None:
    one = EngineSettings.from_env({"SMS_PROVIDER": "http", "SMS_PROVIDER_URL": "https://a.test/x"})
    assert one.provider_urls == ("https://a.test/x",)
    many = EngineSettings.from_env(
        {"SMS_PROVIDER": "http", "SMS_PROVIDER_URLS": "https://a.test/x , https://b.test/y"}
    )
    assert many.provider_urls == ("https://a.test/x", "https://b.test/y")
    assert (many.sms_provider_failure_threshold, many.sms_provider_cooldown_seconds) == (3, 30.0)
    assert "b.test" not in repr(many)  # URLs may carry credentials: never in a repr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SMS_PROVIDER_URLS": "https://a.test", "SMS_PROVIDER_URL": "https://b.test"},
            "SMS_PROVIDER_URL: set SMS_PROVIDER_URLS or SMS_PROVIDER_URL, not both",
        ),
        (
            {"SMS_PROVIDER_URLS": "https://a.test,ftp://user:s3cret@b.test"},
            "SMS_PROVIDER_URLS: entry 2 is not an http(s) URL with a host",
        ),
        (
            {"SMS_PROVIDER_URLS": "https://a.test/x,https://u:s3cret@a.test/x?k=1"},
            "SMS_PROVIDER_URLS: entries 1 and 2 name the same provider",
        ),
        (
            {"SMS_PROVIDER_URL": "https://a.test", "SMS_PROVIDER_FAILURE_THRESHOLD": "0"},
            "SMS_PROVIDER_FAILURE_THRESHOLD: must be at least 1",
        ),
        (
            {"SMS_PROVIDER_URL": "https://a.test", "SMS_PROVIDER_COOLDOWN_SECONDS": "soon"},
            "SMS_PROVIDER_COOLDOWN_SECONDS: expected a number",
        ),
    ],
)
def test_bad_provider_settings_name_the_variable_and_never_a_secret(
    env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ValueError) as caught:
        EngineSettings.from_env({"SMS_PROVIDER": "http", **env})
    assert str(caught.value).startswith(expected)
    assert "s3cret" not in str(caught.value)


# --- the circuit breaker and the answer's id, as plain functions ------------------------------


def test_the_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("p", failure_threshold=3, cooldown_seconds=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success in between starts the count again
    breaker.record_failure()
    breaker.record_failure()
    assert (breaker.state, breaker.allows()) == (CLOSED, True)
    breaker.record_failure()
    assert (breaker.state, breaker.allows()) == (OPEN, False)
    clock.now += 9.9
    assert not breaker.allows()
    clock.now += 0.1
    assert (breaker.state, breaker.allows()) == (HALF_OPEN, True)
    breaker.record_failure()  # the trial failed: open again at once, for a full cool-down
    assert (breaker.state, breaker.allows()) == (OPEN, False)
    clock.now += 10
    breaker.record_success()
    assert (breaker.state, breaker.allows()) == (CLOSED, True)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"id": "SM123"}, "SM123"),
        ({"id": 42}, "42"),
        ({"id": " spaced "}, "spaced"),
        ({"id": ""}, None),
        ({"id": True}, None),
        ({"id": None}, None),
        ({"id": {"nested": 1}}, None),
        ({"id": "x" * 256}, None),
        ({"message_id": "ours"}, None),
        (["id"], None),
        (None, None),
    ],
)
def test_the_providers_id_is_read_from_its_answer(answer: Any, expected: str | None) -> None:
    assert provider_message_id(answer) == expected


def test_a_transient_http_error_says_whether_the_request_could_have_arrived() -> None:
    assert TransientHttpError("HTTP 503").request_sent is True
    assert TransientHttpError("refused", request_sent=False).request_sent is False
