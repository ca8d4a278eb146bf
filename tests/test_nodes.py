"""Node handlers and config validation: plain functions, no database, no Celery."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from db.statuses import ContactStatus, ExecutionStatus
from tasks.errors import InvalidNodeConfig, MissingPlaceholder
from tasks.node_config import parse_node_config
from tasks.nodes import ContactView, decide

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NEXT = uuid.uuid4()
NODE = uuid.UUID(int=1)


def contact(**attributes: object) -> ContactView:
    return ContactView(
        id=uuid.uuid4(),
        phone="+15550001",
        email="a@example.test",
        attributes=dict(attributes),
        opted_out=False,
    )


def run(
    node_type: str,
    config: dict,
    who: ContactView | None = None,
    node_id: uuid.UUID = NODE,
):
    parsed = parse_node_config(node_type, config)
    return decide(
        node_type,
        parsed,
        node_id=node_id,
        next_node_id=NEXT,
        contact=who or contact(first_name="Ann", plan="pro", score=7),
        db_now=NOW,
    )


def test_send_sms_renders_attributes_then_phone_and_email() -> None:
    decision = run("send_sms", {"body": "Hi {{first_name}}, {{ phone }} / {{email}}"})
    assert decision.sms_body == "Hi Ann, +15550001 / a@example.test"
    assert decision.next_node_id == NEXT


def test_send_sms_missing_placeholder_is_an_error_not_a_blank() -> None:
    with pytest.raises(MissingPlaceholder, match="missing_placeholder: last_name"):
        run("send_sms", {"body": "Hi {{last_name}}"})


def test_send_sms_skips_opted_out_contact_and_continues() -> None:
    opted_out = ContactView(uuid.uuid4(), "+1555", None, {}, opted_out=True)
    decision = run("send_sms", {"body": "Hi"}, opted_out)
    assert decision.execution_status == ExecutionStatus.SKIPPED
    assert decision.sms_body is None
    assert decision.next_node_id == NEXT


def test_wait_seconds_and_until() -> None:
    assert run("wait", {"seconds": 3600}).wake_at == NOW + timedelta(hours=1)
    until = "2026-12-01T09:00:00+01:00"
    wake_at = run("wait", {"until": until}).wake_at
    assert wake_at == datetime.fromisoformat(until)
    # Normalised to UTC when parsed: the stores never see the +01:00 wall clock.
    assert wake_at is not None and wake_at.utcoffset() == timedelta(0)
    assert wake_at.hour == 8


def test_wait_until_in_the_past_fires_at_once() -> None:
    decision = run("wait", {"until": "2020-01-01T00:00:00Z"})
    assert decision.wake_at is None
    assert decision.next_node_id == NEXT


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "pro", True),
        ("ne", "pro", False),
        ("in", ["basic", "pro"], True),
        ("exists", None, True),
    ],
)
def test_condition_on_plan(op: str, value: object, expected: bool) -> None:
    yes, no = uuid.uuid4(), uuid.uuid4()
    config = {"field": "plan", "op": op, "true_node_id": str(yes), "false_node_id": str(no)}
    if op != "exists":
        config["value"] = value
    assert run("condition", config).next_node_id == (yes if expected else no)


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [("gt", 5, True), ("gte", 7, True), ("lt", 7, False), ("lte", 7, True), ("gt", "5", False)],
)
def test_condition_orders_numbers_only_against_numbers(op: str, value: object, expected: bool):
    yes = uuid.uuid4()
    config = {
        "field": "score",
        "op": op,
        "value": value,
        "true_node_id": str(yes),
        "false_node_id": None,
    }
    assert (run("condition", config).next_node_id == yes) is expected


def test_condition_missing_field_takes_false_branch() -> None:
    no = uuid.uuid4()
    config = {"field": "nope", "op": "exists", "true_node_id": None, "false_node_id": str(no)}
    assert run("condition", config).next_node_id == no


def test_split_is_stable_per_contact_and_follows_weights() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    config = {"branches": [{"weight": 80, "node_id": str(a)}, {"weight": 20, "node_id": str(b)}]}
    who = contact()
    first = run("split", config, who).next_node_id
    assert all(run("split", config, who).next_node_id == first for _ in range(5))
    counts = Counter(run("split", config, contact()).next_node_id for _ in range(2000))
    assert 0.75 < counts[a] / 2000 < 0.85


def test_update_contact_and_exit() -> None:
    assert run("update_contact", {"set": {"plan": "max"}}).attribute_updates == {"plan": "max"}
    exit_decision = run("exit", {})
    assert exit_decision.terminal_status == ContactStatus.EXITED


@pytest.mark.parametrize(
    ("node_type", "config", "problem"),
    [
        ("send_sms", {}, "non-empty string body"),
        ("send_sms", {"body": "x", "extra": 1}, "unknown key"),
        ("wait", {"seconds": -1}, "wait seconds"),
        ("wait", {"seconds": 1, "until": "2026-01-01T00:00:00Z"}, "exactly one"),
        ("wait", {"until": "2026-01-01T00:00:00"}, "time zone"),
        ("wait", {"until": "tomorrow"}, "ISO-8601"),
        ("condition", {"field": "a", "op": "like", "value": 1}, "op must be"),
        ("condition", {"field": "a", "op": "in", "value": 1}, "list value"),
        ("condition", {"field": "a", "op": "eq"}, "needs a value"),
        ("condition", {"field": "a", "op": "eq", "value": 1, "true_node_id": "x"}, "uuid"),
        ("split", {"branches": []}, "non-empty"),
        ("split", {"branches": [{"weight": 0, "node_id": None}]}, "more than 0"),
        ("update_contact", {"set": {}}, "non-empty set"),
        ("webhook", {"url": "ftp://x"}, "http(s) URL"),
        ("webhook", {"url": "https://x.test", "timeout_seconds": 99}, "timeout_seconds"),
        ("exit", {"why": 1}, "unknown key"),
        ("wait_for_event", {"timeout_seconds": 60}, "event name"),
        ("wait_for_event", {"event": "x", "timeout_seconds": 0}, "timeout_seconds"),
        ("wait_for_event", {"event": "x"}, "timeout_seconds"),
        ("wait_for_event", {"event": "x", "timeout_seconds": 1, "where": [1]}, "where"),
        ("wait_for_event", {"event": "x", "timeout_seconds": 1, "matched_node_id": "y"}, "uuid"),
        ("wait_for_event", {"event": "x", "timeout_seconds": 1, "match": {}}, "unknown key"),
        ("teleport", {}, "unknown node type"),
    ],
)
def test_invalid_configs_are_named(node_type: str, config: dict, problem: str) -> None:
    with pytest.raises(InvalidNodeConfig) as raised:
        parse_node_config(node_type, config)
    assert raised.value.reason.startswith("invalid_node_config: ")
    assert problem in raised.value.reason


def test_config_must_be_an_object() -> None:
    with pytest.raises(InvalidNodeConfig, match="must be an object"):
        parse_node_config("exit", ["not", "a", "dict"])


def test_wait_for_event_waits_at_itself_then_takes_the_timeout_branch() -> None:
    matched, timed_out = uuid.uuid4(), uuid.uuid4()
    config = parse_node_config(
        "wait_for_event",
        {
            "event": "link_clicked",
            "timeout_seconds": 90,
            "matched_node_id": str(matched),
            "timeout_node_id": str(timed_out),
            "where": {"link": "offer"},
        },
    )
    common = {"node_id": NODE, "next_node_id": NEXT, "contact": contact(), "db_now": NOW}
    entering = decide("wait_for_event", config, **common)
    assert entering.next_node_id == NODE and entering.wake_at == NOW + timedelta(seconds=90)
    assert entering.result["waiting_for"] == "link_clicked"
    waking = decide("wait_for_event", config, resuming_wait=True, **common)
    assert waking.next_node_id == timed_out and waking.wake_at is None
    assert waking.result == {"event": "link_clicked", "matched": False, "timed_out": True}


def test_wait_for_event_cannot_branch_to_itself() -> None:
    config = parse_node_config(
        "wait_for_event", {"event": "x", "timeout_seconds": 5, "timeout_node_id": str(NODE)}
    )
    with pytest.raises(InvalidNodeConfig, match="itself"):
        decide(
            "wait_for_event", config, node_id=NODE, next_node_id=None, contact=contact(), db_now=NOW
        )
