"""Outbound HTTP against a real local server: the client's verdicts and bounds, SMS delivery through the
HTTP provider, webhook nodes, and Celery's retry policy in a real worker process."""

from __future__ import annotations

import ipaddress
import itertools
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, func, select, update

from db.models import Contact, Conversation, JourneyNodeExecution, Message, TaskFailure
from tasks import names
from tasks.deliveries import deliver_message
from tasks.engine import execute_node_kwargs as execute_step_kwargs
from tasks.errors import PermanentError, TransientError
from tasks.http import MAX_RESPONSE_BYTES, HttpEgress, PermanentHttpError, TransientHttpError
from tasks.settings import EngineSettings, use_engine_settings
from tasks.steps import execute_node
from tests.engine_harness import next_steps, row_counts, run_step
from tests.factories import (
    JourneyFixture,
    make_contacts,
    make_journey,
    make_journey_contact,
    make_tenant,
)
from tests.http_stub import HttpStub, Reply, closed_port_url, http_stub
from tests.worker_process import broker_namespace, start_worker, wait_until, worker_env


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with http_stub() as server:
        yield server


# --- 1. call_json: the verdicts (the operator's client: no address rule) -----------------


@pytest.fixture
def egress() -> Iterator[HttpEgress]:
    client = HttpEgress(None)
    yield client
    client.close()


def test_call_json_2xx_returns_status_and_body(stub, egress) -> None:
    stub.script(Reply(201, body={"id": "abc"}))
    response = egress.call_json(stub.url_for("/ok"), {"a": 1}, timeout=1, idempotency_key="k1")
    assert (response.status, response.body, response.truncated) == (201, '{"id": "abc"}', False)
    assert response.json() == {"id": "abc"}


@pytest.mark.parametrize("status", [500, 501, 502, 503, 504, 599, 429, 408, 409, 425])
def test_call_json_retryable_status_is_transient(stub, egress, status) -> None:
    stub.script(status)
    url = stub.url_for("/busy")
    with pytest.raises(TransientHttpError) as caught:
        egress.call_json(url, {}, timeout=1, idempotency_key="k")
    assert str(caught.value) == f"HTTP {status} from {url}"
    assert caught.value.request_sent  # the server answered: it had the request
    assert len(stub.requests) == 1  # call_json itself never retries: Celery does


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_call_json_client_error_is_permanent(stub, egress, status) -> None:
    stub.script(status)
    url = stub.url_for("/bad")
    with pytest.raises(PermanentHttpError) as caught:
        egress.call_json(url, {}, timeout=1, idempotency_key="k")
    assert not isinstance(caught.value, TransientError)
    assert caught.value.reason == f"HTTP {status} from {url}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_call_json_does_not_follow_redirects(stub, egress, status) -> None:
    # Followed, a redirect would be a second request to a URL nobody checked (an internal
    # address, say), and a redirected POST can arrive as a body-less GET that passes for success.
    stub.script(Reply(status, headers={"Location": stub.url_for("/elsewhere")}), then=200)
    url = stub.url_for("/moved")
    with pytest.raises(PermanentHttpError, match=f"HTTP {status} from"):
        egress.call_json(url, {"a": 1}, timeout=1, idempotency_key="k")
    assert [(r.method, r.path) for r in stub.requests] == [("POST", "/moved")]


def test_errors_name_scheme_host_and_path_only(stub, egress) -> None:
    # Tokens live in query strings and userinfo: neither may reach a stored reason or a log.
    port = stub.url.rsplit(":", 1)[1]
    url = f"http://hook-user:s3cret-pass@127.0.0.1:{port}/hooks/7?token=s3cret-token#frag"
    stub.script(503, 404)
    with pytest.raises(TransientHttpError) as transient:
        egress.call_json(url, {}, timeout=1, idempotency_key="k")
    with pytest.raises(PermanentHttpError) as permanent:
        egress.call_json(url, {}, timeout=1, idempotency_key="k")
    expected = f"http://127.0.0.1:{port}/hooks/7"
    assert str(transient.value) == f"HTTP 503 from {expected}"
    assert permanent.value.reason == f"HTTP 404 from {expected}"
    with pytest.raises(TransientHttpError) as refused:
        egress.call_json(
            closed_port_url("/x?token=s3cret-token").replace("http://", "http://u:s3cret-pass@"),
            {},
            timeout=1,
            idempotency_key="k",
        )
    for error in (transient.value, permanent.value, refused.value):
        assert "s3cret" not in str(error) and "hook-user" not in str(error)
    # The request itself still carried them: the path and query, and Basic credentials.
    assert stub.requests[0].path == "/hooks/7?token=s3cret-token"
    assert stub.requests[0].header("Authorization", "").startswith("Basic ")


def test_call_json_slow_response_times_out_quickly(stub, egress) -> None:
    stub.script(Reply(200, delay=2))
    started = time.monotonic()
    with pytest.raises(TransientHttpError, match="ReadTimeout") as caught:
        egress.call_json(stub.url_for("/slow"), {}, timeout=0.3, idempotency_key="k")
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.0
    assert caught.value.request_sent  # it may have acted on the request
    assert len(stub.requests) == 1


def test_a_dripping_response_is_cut_at_the_overall_deadline(stub, egress) -> None:
    # A byte every 0.1 s never trips a 0.5 s read timeout; the deadline for the whole call does.
    stub.script(Reply(200, body="x" * 40, drip=0.1))
    started = time.monotonic()
    with pytest.raises(TransientHttpError, match="ReadTimeout"):
        egress.call_json(stub.url_for("/drip"), {}, timeout=0.5, idempotency_key="k")
    assert 0.45 <= time.monotonic() - started < 1.5  # all 40 bytes would take 4 s


def test_a_large_response_is_read_only_up_to_the_limit(stub, egress) -> None:
    stub.script(Reply(200, body="y" * (MAX_RESPONSE_BYTES * 4)))
    response = egress.call_json(stub.url_for("/big"), {}, timeout=2, idempotency_key="k")
    assert response.status == 200
    assert (len(response.body), response.truncated) == (MAX_RESPONSE_BYTES, True)
    assert response.json() is None  # a cut-off body is not parsed


def test_connections_are_pooled_and_kept_alive(stub, egress) -> None:
    stub.script(then=Reply(200, keep_alive=True))
    for key in ("a", "b", "c"):
        egress.call_json(stub.url_for("/pooled"), {}, timeout=1, idempotency_key=key)
    assert len({r.client_port for r in stub.requests}) == 1


def test_call_json_connection_refused_is_transient_and_provably_unsent(egress) -> None:
    with pytest.raises(TransientHttpError, match="Connection refused") as caught:
        egress.call_json(closed_port_url("/x"), {}, timeout=1, idempotency_key="k")
    assert caught.value.request_sent is False


def test_call_json_connection_closed_without_response_is_transient(stub, egress) -> None:
    stub.script(Reply(drop=True))
    with pytest.raises(TransientHttpError, match="RemoteProtocolError") as caught:
        egress.call_json(stub.url_for("/drop"), {}, timeout=1, idempotency_key="k")
    assert caught.value.request_sent  # it arrived (the stub recorded it) before the drop
    assert len(stub.requests) == 1


def test_call_json_refuses_other_schemes_without_a_request(egress) -> None:
    with pytest.raises(PermanentHttpError, match="not an http"):
        egress.call_json("file:///etc/passwd", {}, timeout=1, idempotency_key="k")


def test_call_json_sends_json_with_idempotency_key(stub, egress) -> None:
    payload = {
        "to": "+15550000000",
        "body": "Hi Ann \u2713 caf\u00e9",
        "n": 3,
        "nested": {"a": [1, None]},
    }
    egress.call_json(
        stub.url_for("/hooks/1?x=y"),
        payload,
        method="PUT",
        timeout=1,
        idempotency_key="msg-123",
        headers={"X-Extra": "yes"},
    )
    [request] = stub.requests
    assert (request.method, request.path) == ("PUT", "/hooks/1?x=y")
    assert request.header("Idempotency-Key") == "msg-123"
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent") == "journey-worker"
    assert request.header("Accept-Encoding") == "identity"
    assert request.header("X-Extra") == "yes"
    assert request.json() == payload


# --- 2. SMS delivery through the HTTP provider ------------------------------------------

SMS_JOURNEY = [
    ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "thanks"),
    ("thanks", "send_sms", {"body": "Thanks {{first_name}}"}, None),
]


@pytest.fixture
def sms_journey(pg_engine: Engine) -> JourneyFixture:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(pg_engine, tenant_id, SMS_JOURNEY)
    fixture.contacts = make_contacts(pg_engine, tenant_id, 2)
    return fixture


@pytest.fixture
def http_provider(stub) -> Iterator[str]:
    """The HTTP provider pointed at the stub, for deliver_message run in this process."""
    url = stub.url_for("/sms")
    use_engine_settings(
        EngineSettings(sms_provider="http", sms_provider_url=url, sms_provider_timeout=0.5)
    )
    yield url
    use_engine_settings(None)


def deliveries(outcome: Any) -> list[dict[str, Any]]:
    """deliver_message kwargs for each message the step handed to delivery."""
    return [
        {"tenant_id": f.kwargs["tenant_id"], "message_id": message_id}
        for f in outcome.followups
        if f.task_name == names.DELIVER_MESSAGES
        for message_id in f.kwargs["message_ids"]
    ]


def queue_message(journey: JourneyFixture, contact_id: uuid.UUID, engine: Engine) -> dict:
    """Run the send_sms entry step: the message is QUEUED; return its deliver_message kwargs."""
    jc = make_journey_contact(engine, journey, contact_id)
    [kwargs] = deliveries(run_step(journey.tenant_id, jc, journey.nodes["hello"], 0))
    return kwargs


def message(engine: Engine, message_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(
                Message.status,
                Message.sent_at,
                Message.conversation_id,
                Message.error,
                Message.attempts,
                Message.contact_id,
                Message.provider,
                Message.provider_message_id,
            ).where(Message.id == uuid.UUID(message_id))
        ).one()


def conversations(engine: Engine, contact_id: uuid.UUID) -> list[uuid.UUID]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(Conversation.id).where(Conversation.contact_id == contact_id))
            .scalars()
            .all()
        )


def task_failures(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            select(
                TaskFailure.task_name,
                TaskFailure.task_id,
                TaskFailure.tenant_id,
                TaskFailure.journey_contact_id,
                TaskFailure.kwargs,
                TaskFailure.error,
            )
        ).all()


def test_delivery_2xx_marks_sent_with_one_conversation_per_contact(
    pg_engine, sms_journey, stub, http_provider
) -> None:
    journey, contact = sms_journey, sms_journey.contacts[0]
    jc = make_journey_contact(pg_engine, journey, contact)
    first = run_step(journey.tenant_id, jc, journey.nodes["hello"], 0)
    second = run_step(journey.tenant_id, jc, journey.nodes["thanks"], next_steps(first)[0]["step"])
    sent = [*deliveries(first), *deliveries(second)]
    assert len(sent) == 2
    with pg_engine.connect() as conn:
        assert conn.execute(select(Message.status)).scalars().all() == ["QUEUED", "QUEUED"]

    results = [deliver_message.run(**kwargs) for kwargs in sent]

    assert results == [{"outcome": "sent"}, {"outcome": "sent"}]
    rows = [message(pg_engine, kwargs["message_id"]) for kwargs in sent]
    assert [r.status for r in rows] == ["SENT", "SENT"]
    assert all(r.sent_at is not None and r.error is None and r.attempts == 1 for r in rows)
    # Where each went; the stub's answer {"ok": true} carries no id, so none is stored.
    assert [(r.provider, r.provider_message_id) for r in rows] == [(http_provider, None)] * 2
    assert conversations(pg_engine, contact) == [rows[0].conversation_id]
    assert rows[1].conversation_id == rows[0].conversation_id
    requests = stub.requests
    assert [(r.method, r.path) for r in requests] == [("POST", "/sms"), ("POST", "/sms")]
    assert [r.idempotency_key for r in requests] == [k["message_id"] for k in sent]
    assert requests[0].header("Content-Type") == "application/json"
    assert requests[0].json() == {
        "message_id": sent[0]["message_id"],
        "tenant_id": str(journey.tenant_id),
        "to": "+15550000000",
        "body": "Hi Ann0",
    }
    assert requests[1].json()["body"] == "Thanks Ann0"


def test_delivering_the_same_message_twice_calls_the_provider_once(
    pg_engine, sms_journey, stub, http_provider
) -> None:
    kwargs = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
    assert deliver_message.run(**kwargs) == {"outcome": "sent"}
    assert deliver_message.run(**kwargs) == {"outcome": "duplicate", "status": "SENT"}
    assert len(stub.requests) == 1
    assert message(pg_engine, kwargs["message_id"]).attempts == 1


def test_the_providers_message_id_is_stored_from_its_answer(
    pg_engine, sms_journey, stub, http_provider
) -> None:
    first = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
    second = queue_message(sms_journey, sms_journey.contacts[1], pg_engine)
    stub.script(Reply(202, body={"id": "SM-0001", "status": "queued"}), Reply(200, body={"id": 42}))
    assert deliver_message.run(**first) == {"outcome": "sent"}
    assert deliver_message.run(**second) == {"outcome": "sent"}
    assert message(pg_engine, first["message_id"]).provider_message_id == "SM-0001"
    assert message(pg_engine, second["message_id"]).provider_message_id == "42"


def test_a_provider_id_already_taken_in_the_tenant_is_not_stored_and_the_message_is_sent(
    pg_engine, sms_journey, stub, http_provider
) -> None:
    # The id is unique per tenant (contract v2). A provider that repeats one must not turn a
    # delivered message into a failure (or an endless retry): the second keeps no id.
    first = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
    second = queue_message(sms_journey, sms_journey.contacts[1], pg_engine)
    stub.script(then=Reply(200, body={"id": "SM-same"}))
    assert deliver_message.run(**first) == {"outcome": "sent"}
    assert deliver_message.run(**second) == {"outcome": "sent"}
    rows = [message(pg_engine, k["message_id"]) for k in (first, second)]
    assert [(r.status, r.provider_message_id) for r in rows] == [
        ("SENT", "SM-same"),
        ("SENT", None),
    ]


@pytest.mark.parametrize(
    "fault",
    [Reply(503), Reply(500), Reply(429), Reply(200, delay=2), Reply(drop=True)],
    ids=["503", "500", "429", "timeout", "dropped"],
)
def test_transient_fault_is_recorded_and_a_later_attempt_sends_with_the_same_key(
    pg_engine, sms_journey, stub, http_provider, fault
) -> None:
    kwargs = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
    stub.script(fault, then=200)

    with pytest.raises(TransientHttpError) as caught:
        deliver_message.run(**kwargs)

    row = message(pg_engine, kwargs["message_id"])
    # Still QUEUED, saying why; and committed to this provider, which may have accepted it.
    assert (row.status, row.sent_at, row.error, row.attempts, row.provider) == (
        "QUEUED",
        None,
        caught.value.reason,
        1,
        http_provider,
    )
    assert http_provider in row.error

    assert deliver_message.run(**kwargs) == {"outcome": "sent"}
    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.error, row.attempts, row.provider) == ("SENT", None, 2, http_provider)
    assert row.sent_at is not None
    assert conversations(pg_engine, row.contact_id) == [row.conversation_id]
    requests = stub.wait_for_requests(2)
    assert [r.idempotency_key for r in requests] == [kwargs["message_id"]] * 2
    assert requests[0].json() == requests[1].json()


@pytest.mark.parametrize(
    "reply",
    [Reply(400), Reply(404), Reply(422), Reply(301, headers={"Location": "https://x.test/"})],
    ids=["400", "404", "422", "301"],
)
def test_client_error_fails_the_message_for_good_without_raising(
    pg_engine, sms_journey, stub, http_provider, reply
) -> None:
    kwargs = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
    stub.script(reply, then=200)
    reason = f"HTTP {reply.status} from {http_provider}"

    assert deliver_message.run(**kwargs) == {"outcome": "failed", "reason": reason}

    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.error, row.sent_at, row.attempts) == ("FAILED", reason, None, 1)
    # A later redelivery of the same task (a duplicate message) does not try again.
    assert deliver_message.run(**kwargs) == {"outcome": "duplicate", "status": "FAILED"}
    assert len(stub.requests) == 1
    assert task_failures(pg_engine) == []


def test_phone_removed_before_delivery_fails_without_calling_the_provider(
    pg_engine, sms_journey, stub, http_provider
) -> None:
    # The engine skips send_sms for a contact with no phone; this one lost it after queuing.
    kwargs = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(
            update(Contact).where(Contact.id == sms_journey.contacts[0]).values(phone=None)
        )
    assert deliver_message.run(**kwargs) == {
        "outcome": "failed",
        "reason": "contact has no phone number",
    }
    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.error) == ("FAILED", "contact has no phone number")
    assert stub.requests == []


def test_retries_exhausted_fail_the_message_and_record_the_task(
    pg_engine, sms_journey, stub, http_provider
) -> None:
    kwargs = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
    stub.script(then=503)
    with pytest.raises(TransientHttpError) as caught:
        deliver_message.run(**kwargs)

    # What Celery calls once the last retry raised.
    deliver_message.on_failure(caught.value, "task-id", (), kwargs, None)

    reason = f"retries_exhausted: TransientHttpError: HTTP 503 from {http_provider}"
    row = message(pg_engine, kwargs["message_id"])
    assert (row.status, row.error, row.sent_at) == ("FAILED", reason, None)
    assert task_failures(pg_engine) == [
        (
            names.DELIVER_MESSAGE,
            "task-id",
            kwargs["tenant_id"],
            None,
            kwargs,
            reason,
        )
    ]


def test_failure_after_the_message_was_sent_leaves_it_sent(
    pg_engine, sms_journey, stub, http_provider
) -> None:
    # A late on_failure (say, for a retry that lost the race) must not undo a delivery.
    kwargs = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
    deliver_message.run(**kwargs)
    deliver_message.on_failure(TransientHttpError("HTTP 503"), "task-id", (), kwargs, None)
    assert message(pg_engine, kwargs["message_id"]).status == "SENT"
    assert len(task_failures(pg_engine)) == 1


def test_logging_provider_is_the_default(pg_engine, sms_journey, stub) -> None:
    kwargs = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
    use_engine_settings(EngineSettings())
    try:
        assert deliver_message.run(**kwargs) == {"outcome": "sent"}
    finally:
        use_engine_settings(None)
    assert message(pg_engine, kwargs["message_id"]).status == "SENT"
    assert stub.requests == []


# --- 3. webhook nodes -------------------------------------------------------------------


def webhook_journey(engine: Engine, url: str, **config: Any) -> JourneyFixture:
    tenant_id = make_tenant(engine)
    hook = {"url": url, "method": "POST", "timeout_seconds": 0.5, **config}
    fixture = make_journey(
        engine,
        tenant_id,
        [
            ("hello", "update_contact", {"set": {"stage": "hooked"}}, "hook"),
            ("hook", "webhook", hook, None),
        ],
    )
    fixture.contacts = make_contacts(engine, tenant_id, 1)
    return fixture


# The stub listens on 127.0.0.1: an operator's allow-list for local receivers lets it through.
LOCAL_RECEIVERS = EngineSettings(webhook_allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))


def run_hook(journey: JourneyFixture, jc: uuid.UUID, **kwargs: Any) -> Any:
    """Run the webhook step (step 1), with loopback receivers allowed unless told otherwise."""
    kwargs.setdefault("settings", LOCAL_RECEIVERS)
    return run_step(journey.tenant_id, jc, journey.nodes["hook"], 1, **kwargs)


def at_webhook(engine: Engine, journey: JourneyFixture) -> uuid.UUID:
    """A journey contact that has run its first step and is due at the webhook (step 1)."""
    jc = make_journey_contact(engine, journey, journey.contacts[0])
    [following] = next_steps(run_step(journey.tenant_id, jc, journey.nodes["hello"], 0))
    assert (following["node_id"], following["step"]) == (str(journey.nodes["hook"]), 1)
    return jc


def hook_executions(engine: Engine, journey: JourneyFixture) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            select(
                JourneyNodeExecution.status,
                JourneyNodeExecution.result,
                JourneyNodeExecution.error,
                JourneyNodeExecution.step_seq,
            ).where(JourneyNodeExecution.node_id == journey.nodes["hook"])
        ).all()


def test_webhook_2xx_completes_with_the_payload_and_step_key(pg_engine, stub) -> None:
    url = stub.url_for("/hook")
    journey = webhook_journey(pg_engine, url)
    jc = at_webhook(pg_engine, journey)

    outcome = run_hook(journey, jc)

    assert (outcome.outcome, outcome.execution_status, outcome.contact_status) == (
        "executed",
        "COMPLETED",
        "COMPLETED",
    )
    assert hook_executions(pg_engine, journey) == [("COMPLETED", {"http_status": 200}, None, 1)]
    assert row_counts(pg_engine, jc)["status"] == "COMPLETED"
    [request] = stub.requests
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.idempotency_key == f"{jc}:1"
    assert request.header("Content-Type") == "application/json"
    assert request.json() == {
        "tenant_id": str(journey.tenant_id),
        "journey_id": str(journey.journey_id),
        "journey_contact_id": str(jc),
        "contact_id": str(journey.contacts[0]),
        "node_id": str(journey.nodes["hook"]),
        "step": 1,
        "previous_node_id": str(journey.nodes["hello"]),
    }


def test_webhook_method_from_config_is_used(pg_engine, stub) -> None:
    journey = webhook_journey(pg_engine, stub.url_for("/put"), method="PUT")
    jc = at_webhook(pg_engine, journey)
    run_hook(journey, jc)
    assert [(r.method, r.path) for r in stub.requests] == [("PUT", "/put")]


@pytest.mark.parametrize("fault", [Reply(503), Reply(200, delay=2)], ids=["503", "timeout"])
def test_webhook_transient_fault_commits_nothing_and_the_retry_repeats_the_key(
    pg_engine, stub, fault
) -> None:
    journey = webhook_journey(pg_engine, stub.url_for("/hook"))
    jc = at_webhook(pg_engine, journey)
    before = row_counts(pg_engine, jc)
    stub.script(fault, then=200)

    with pytest.raises(TransientHttpError):
        run_hook(journey, jc)

    assert row_counts(pg_engine, jc) == before
    assert before["status"] == "ACTIVE" and before["step"] == 1
    assert hook_executions(pg_engine, journey) == []

    outcome = run_hook(journey, jc)
    assert (outcome.outcome, outcome.contact_status) == ("executed", "COMPLETED")
    assert hook_executions(pg_engine, journey) == [("COMPLETED", {"http_status": 200}, None, 1)]
    requests = stub.wait_for_requests(2)
    assert [r.idempotency_key for r in requests] == [f"{jc}:1"] * 2
    assert requests[0].json() == requests[1].json()


def test_webhook_4xx_fails_the_contact_with_the_status(pg_engine, stub) -> None:
    url = stub.url_for("/gone")
    journey = webhook_journey(pg_engine, url)
    jc = at_webhook(pg_engine, journey)
    stub.script(404)

    outcome = run_hook(journey, jc)

    reason = f"HTTP 404 from {url}"
    assert (outcome.outcome, outcome.detail, outcome.contact_status) == (
        "failed",
        reason,
        "FAILED",
    )
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["reason"], counts["step"]) == ("FAILED", reason, 2)
    assert hook_executions(pg_engine, journey) == [("FAILED", {}, reason, 1)]
    # The message carrying this step again (a redelivery) is a duplicate: no second call.
    assert run_hook(journey, jc).outcome == "duplicate"
    assert len(stub.requests) == 1


def test_webhook_retries_exhausted_fail_the_contact(pg_engine, stub) -> None:
    url = stub.url_for("/hook")
    journey = webhook_journey(pg_engine, url)
    jc = at_webhook(pg_engine, journey)
    stub.script(then=503)
    with pytest.raises(TransientHttpError) as caught:
        run_hook(journey, jc)
    kwargs = execute_step_kwargs(journey.tenant_id, jc, journey.nodes["hook"], 1)

    execute_node.on_failure(caught.value, "task-id", (), kwargs, None)

    reason = f"retries_exhausted: TransientHttpError: HTTP 503 from {url}"
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["reason"]) == ("FAILED", reason)
    assert task_failures(pg_engine) == [
        (names.EXECUTE_NODE, "task-id", str(journey.tenant_id), str(jc), kwargs, reason)
    ]


def test_webhook_permanent_error_reaching_on_failure_keeps_its_reason(pg_engine, stub) -> None:
    # A PermanentError is never retried; on_failure records its reason as is.
    journey = webhook_journey(pg_engine, stub.url_for("/hook"))
    jc = at_webhook(pg_engine, journey)
    kwargs = execute_step_kwargs(journey.tenant_id, jc, journey.nodes["hook"], 1)
    execute_node.on_failure(PermanentError("boom"), "task-id", (), kwargs, None)
    assert row_counts(pg_engine, jc)["reason"] == "boom"


# --- 4. Celery's retry policy in a real worker ------------------------------------------


def sent_or_failed(engine: Engine, message_id: str) -> bool:
    return message(engine, message_id).status in ("SENT", "FAILED")


@pytest.mark.slow
def test_real_worker_retries_5xx_with_backoff_and_gives_up_cleanly(
    pg_url, pg_engine, sms_journey, stub, cache_prefix, tmp_path
) -> None:
    started = time.monotonic()
    url = stub.url_for("/sms")
    with broker_namespace("redis") as broker_url:
        env = worker_env(
            database_url=pg_url,
            broker_url=broker_url,
            cache_prefix=cache_prefix,
            SMS_PROVIDER="http",
            SMS_PROVIDER_URL=url,
            SMS_PROVIDER_TIMEOUT_SECONDS="1",
            TASK_RETRY_BACKOFF_MAX_SECONDS="1",
            TASK_MAX_RETRIES="2",
            LOG_FORMAT="text",  # the assertions below read the human log lines
        )
        worker = start_worker(env, tmp_path, concurrency=1)
        producer = Celery(broker=broker_url)
        try:

            def publish(kwargs: dict[str, Any]) -> None:
                producer.send_task(names.DELIVER_MESSAGE, kwargs=kwargs, queue=names.DEFAULT_QUEUE)

            # 503, 503, 200: the two retries fit in TASK_MAX_RETRIES=2 and the third call sends.
            retried = queue_message(sms_journey, sms_journey.contacts[0], pg_engine)
            stub.script(503, 503, then=200)
            publish(retried)
            wait_until(lambda: sent_or_failed(pg_engine, retried["message_id"]), timeout=20)
            assert message(pg_engine, retried["message_id"]).status == "SENT"
            calls = stub.requests_with_key(retried["message_id"])
            assert len(calls) == 3
            assert len({r.body for r in calls}) == 1
            gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(calls)]
            assert all(gap < 3 for gap in gaps), gaps  # countdown capped at 1 s
            worker.wait_for_log("task retry task=journeys.deliver_message", timeout=5)
            retry_lines = [
                line
                for line in worker.log().splitlines()
                if "task retry" in line and retried["message_id"] in line
            ]
            assert len(retry_lines) == 2, worker.log()[-4000:]
            assert all("TransientHttpError: HTTP 503" in line for line in retry_lines)
            # Celery's own line says the countdown: full jitter under the 1 s cap, so 0 or 1.
            countdowns = [
                int(m)
                for m in re.findall(r"\] retry: Retry in (\d+)s: TransientHttpError", worker.log())
            ]
            assert len(countdowns) == 2 and all(c <= 1 for c in countdowns), countdowns

            # 400: failed for good on the first answer, never retried.
            refused = queue_message(sms_journey, sms_journey.contacts[1], pg_engine)
            stub.script(400, then=200)
            publish(refused)
            wait_until(lambda: sent_or_failed(pg_engine, refused["message_id"]), timeout=20)
            row = message(pg_engine, refused["message_id"])
            assert (row.status, row.error) == ("FAILED", f"HTTP 400 from {url}")

            # 503 for good: 1 call + 2 retries, then FAILED with the reason and dead-lettered.
            tenant_id = sms_journey.tenant_id
            [third] = make_contacts(pg_engine, tenant_id, 1, phone="+15559999999")
            exhausted = queue_message(sms_journey, third, pg_engine)
            stub.script(then=503)
            publish(exhausted)
            wait_until(lambda: sent_or_failed(pg_engine, exhausted["message_id"]), timeout=20)
            reason = f"retries_exhausted: TransientHttpError: HTTP 503 from {url}"
            row = message(pg_engine, exhausted["message_id"])
            assert (row.status, row.error) == ("FAILED", reason)
            [failure] = [f for f in task_failures(pg_engine) if f.kwargs == exhausted]
            assert (failure.task_name, failure.error) == (names.DELIVER_MESSAGE, reason)
            uuid.UUID(failure.task_id)  # Celery's own task id

            # Nothing more arrives late: no stray retry of the 400 or of the exhausted task.
            time.sleep(1.5)
            assert len(stub.requests_with_key(refused["message_id"])) == 1
            assert len(stub.requests_with_key(exhausted["message_id"])) == 3
            assert len(stub.requests_with_key(retried["message_id"])) == 3
        finally:
            producer.close()
            worker.stop()
    with pg_engine.connect() as conn:
        statuses = conn.execute(select(Message.status, func.count()).group_by(Message.status)).all()
    assert sorted(statuses) == [("FAILED", 2), ("SENT", 1)]
    assert time.monotonic() - started < 40
