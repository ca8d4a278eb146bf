"""Editing a live journey while contacts wait on the edited node (issue 15, part 3): upstream
edits journey_nodes in one transaction and publishes journeys.journey_updated, with or without
a `redirects` map. No contact is stranded, sent twice or silently dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, text, update

from cache import CacheSettings, JourneyCache, build_cache, use_cache
from db import dispatch
from db.engine import transaction
from db.models import JourneyContact, JourneyNode, JourneyNodeExecution, Message
from tasks import metrics
from tasks.errors import BadMessage
from tasks.events import journey_updated
from tasks.lookups import JourneyReader
from tasks.steps import record
from tests.engine_harness import make_due, next_steps, run_batch
from tests.factories import (
    JourneyFixture,
    make_contacts,
    make_journey,
    make_journey_contact,
    make_tenant,
)

WAIT_THEN_SEND = [
    ("pause", "wait", {"seconds": 3600}, "old"),
    ("old", "send_sms", {"body": "old {{first_name}}"}, "tail"),
    ("tail", "update_contact", {"set": {"done": True}}, None),
]

WAIT_THEN_BRANCH = [
    ("pause", "wait", {"seconds": 3600}, "check"),
    (
        "check",
        "condition",
        {
            "field": "plan",
            "op": "eq",
            "value": "pro",
            "true_node_id": "@gold",
            "false_node_id": "@basic",
        },
        None,
    ),
    ("gold", "send_sms", {"body": "gold {{first_name}}"}, None),
    ("basic", "send_sms", {"body": "basic {{first_name}}"}, None),
]


@pytest.fixture
def real_cache(redis_url: str, cache_prefix: str) -> Iterator[JourneyCache]:
    cache = build_cache(CacheSettings(url=redis_url, key_prefix=cache_prefix))
    use_cache(cache)
    yield cache
    use_cache(None)
    keys = list(cache.redis.scan_iter(match=f"{cache_prefix}*"))
    if keys:
        cache.redis.delete(*keys)


def waiting_contacts(
    engine: Engine, nodes: list[Any], reader: JourneyReader, count: int = 10
) -> tuple[JourneyFixture, list[uuid.UUID]]:
    """`count` contacts past the wait, WAITING for the node after it (cached journey)."""
    tenant_id = make_tenant(engine)
    fixture = make_journey(engine, tenant_id, nodes)
    contacts = make_contacts(engine, tenant_id, count)
    jcs = [make_journey_contact(engine, fixture, c) for c in contacts]
    run_batch(tenant_id, fixture.nodes["pause"], [(jc, 0) for jc in jcs], reader=reader)
    with engine.connect() as conn:
        statuses = conn.execute(
            select(JourneyContact.status).where(JourneyContact.id.in_(jcs))
        ).scalars()
        assert set(statuses) == {"WAITING"}
    return fixture, jcs


def add_node(
    engine: Engine, fixture: JourneyFixture, body: str, next_node: uuid.UUID | None
) -> uuid.UUID:
    node_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            insert(JourneyNode).values(
                id=node_id,
                tenant_id=fixture.tenant_id,
                journey_id=fixture.journey_id,
                type="send_sms",
                config={"body": body},
                next_node_id=next_node,
            )
        )
    return node_id


def run_until_quiet(engine: Engine, fixture: JourneyFixture, reader: JourneyReader) -> list[Any]:
    """The dispatcher's due steps, then every published next step, until nothing is left."""
    outcomes = []
    with transaction() as session:
        due = dispatch.claim_scheduled_steps(session, per_tenant=100, limit=100, grace_seconds=300)
    pending: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {}
    for step in due:
        pending.setdefault(step.node_id, []).append((step.journey_contact_id, step.step_seq))
    for _ in range(20):
        if not pending:
            return outcomes
        following: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {}
        for node_id, steps in pending.items():
            outcome = run_batch(fixture.tenant_id, node_id, steps, reader=reader)
            record(outcome, 0.01, None)
            outcomes.append(outcome)
            for item in next_steps(outcome):
                following.setdefault(uuid.UUID(item["node_id"]), []).append(
                    (uuid.UUID(item["journey_contact_id"]), item["step"])
                )
        pending = following
    raise AssertionError("steps kept coming")


def states(engine: Engine, jcs: list[uuid.UUID]) -> list[tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(JourneyContact.status, JourneyContact.status_reason).where(
                JourneyContact.id.in_(jcs)
            )
        ).all()
    return sorted((status, reason) for status, reason in rows)


def bodies(engine: Engine, fixture: JourneyFixture) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                select(Message.body).where(Message.tenant_id == fixture.tenant_id)
            ).scalars()
        )


def redirect_results(engine: Engine, jcs: list[uuid.UUID]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        results = conn.execute(
            select(JourneyNodeExecution.result).where(
                JourneyNodeExecution.journey_contact_id.in_(jcs)
            )
        ).scalars()
        return [r["redirected"] for r in results if r and "redirected" in r]


def updated(fixture: JourneyFixture, **extra: Any) -> dict[str, Any]:
    return journey_updated.run(
        tenant_id=str(fixture.tenant_id), journey_id=str(fixture.journey_id), **extra
    )


def test_wait_repointed_at_a_new_send_and_old_send_deleted(pg_engine, real_cache) -> None:
    """The issue's measurement: 10 waiting contacts used to end FAILED node_not_found."""
    reader = JourneyReader(real_cache)
    fixture, jcs = waiting_contacts(pg_engine, WAIT_THEN_SEND, reader)
    redirected_before = metrics.JOURNEY_EDITS.labels("redirected")._value.get()
    new = add_node(pg_engine, fixture, "new {{first_name}}", fixture.nodes["tail"])
    with pg_engine.begin() as conn:  # upstream's one transaction
        conn.execute(
            update(JourneyNode)
            .where(JourneyNode.id == fixture.nodes["pause"])
            .values(next_node_id=new)
        )
        conn.execute(delete(JourneyNode).where(JourneyNode.id == fixture.nodes["old"]))
    updated(fixture)
    make_due(pg_engine, *jcs)
    run_until_quiet(pg_engine, fixture, reader)

    assert states(pg_engine, jcs) == [("COMPLETED", None)] * 10
    assert bodies(pg_engine, fixture) == sorted(f"new Ann{i}" for i in range(10))
    redirects = redirect_results(pg_engine, jcs)
    assert len(redirects) == 10
    assert {(r["from"], r["to"], r["rule"]) for r in redirects} == {
        (str(fixture.nodes["old"]), str(new), "previous_node")
    }
    assert metrics.JOURNEY_EDITS.labels("redirected")._value.get() == redirected_before + 10


def test_a_redirect_map_sends_waiting_contacts_to_the_new_node(pg_engine, real_cache) -> None:
    """The wait's edge went null with the delete (ON DELETE SET NULL): only the map knows."""
    reader = JourneyReader(real_cache)
    fixture, jcs = waiting_contacts(pg_engine, WAIT_THEN_SEND, reader)
    new = add_node(pg_engine, fixture, "new {{first_name}}", fixture.nodes["tail"])
    with pg_engine.begin() as conn:
        conn.execute(delete(JourneyNode).where(JourneyNode.id == fixture.nodes["old"]))
    updated(fixture, redirects={str(fixture.nodes["old"]): str(new)})
    make_due(pg_engine, *jcs)
    run_until_quiet(pg_engine, fixture, reader)

    assert states(pg_engine, jcs) == [("COMPLETED", None)] * 10
    assert bodies(pg_engine, fixture) == sorted(f"new Ann{i}" for i in range(10))
    assert {r["rule"] for r in redirect_results(pg_engine, jcs)} == {"redirect_map"}


def test_a_redirect_to_null_ends_the_journey_there_visibly(pg_engine, real_cache) -> None:
    reader = JourneyReader(real_cache)
    fixture, jcs = waiting_contacts(pg_engine, WAIT_THEN_SEND, reader, count=3)
    with pg_engine.begin() as conn:
        conn.execute(delete(JourneyNode).where(JourneyNode.id == fixture.nodes["old"]))
    updated(fixture, redirects={str(fixture.nodes["old"]): None})
    make_due(pg_engine, *jcs)
    run_until_quiet(pg_engine, fixture, reader)
    assert states(pg_engine, jcs) == [("COMPLETED", "node_removed")] * 3
    assert bodies(pg_engine, fixture) == []
    assert {(r["to"], r["rule"]) for r in redirect_results(pg_engine, jcs)} == {
        (None, "redirect_map")
    }


def test_a_vanished_condition_branch_holds_contacts_until_a_map_says_where(
    pg_engine, real_cache
) -> None:
    reader = JourneyReader(real_cache)
    fixture, jcs = waiting_contacts(pg_engine, WAIT_THEN_BRANCH, reader)
    # Upstream deletes the "gold" branch but leaves the condition's config naming it.
    with pg_engine.begin() as conn:
        conn.execute(delete(JourneyNode).where(JourneyNode.id == fixture.nodes["gold"]))
    updated(fixture)
    make_due(pg_engine, *jcs)
    run_until_quiet(pg_engine, fixture, reader)
    # Nothing says where "gold" went: held, visibly, nothing sent, nothing failed.
    assert states(pg_engine, jcs) == [("PAUSED", "node_not_found")] * 10
    assert bodies(pg_engine, fixture) == []

    updated(fixture, redirects={str(fixture.nodes["gold"]): str(fixture.nodes["basic"])})
    run_until_quiet(pg_engine, fixture, reader)
    assert states(pg_engine, jcs) == [("COMPLETED", None)] * 10
    # Exactly one message each, on the branch the map named.
    assert bodies(pg_engine, fixture) == sorted(f"basic Ann{i}" for i in range(10))


def test_redirects_naming_a_node_outside_the_journey_are_refused(pg_engine, real_cache) -> None:
    reader = JourneyReader(real_cache)
    fixture, _jcs = waiting_contacts(pg_engine, WAIT_THEN_SEND, reader, count=1)
    stranger = uuid.uuid4()
    with pytest.raises(BadMessage, match=str(stranger)):
        updated(fixture, redirects={str(fixture.nodes["old"]): str(stranger)})
    with pytest.raises(BadMessage, match="redirects"):
        updated(fixture, redirects={"not-a-uuid": None})


def test_a_next_node_id_left_pointing_at_a_deleted_node(pg_engine, real_cache) -> None:
    """Upstream's own schema may lack the foreign key that nulls the edge: the send waited on
    keeps pointing at a deleted node. Each contact sends once, is held at the dangling edge
    (not failed, not sent twice), and a map later takes it on."""
    reader = JourneyReader(real_cache)
    fixture, jcs = waiting_contacts(pg_engine, WAIT_THEN_SEND, reader)
    with pg_engine.begin() as conn:
        # As a database without the foreign key would: the edge old -> tail stays.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(delete(JourneyNode).where(JourneyNode.id == fixture.nodes["tail"]))
    updated(fixture)
    make_due(pg_engine, *jcs)
    run_until_quiet(pg_engine, fixture, reader)
    assert states(pg_engine, jcs) == [("PAUSED", "node_not_found")] * 10
    assert bodies(pg_engine, fixture) == sorted(f"old Ann{i}" for i in range(10))

    new = add_node(pg_engine, fixture, "new {{first_name}}", None)
    updated(fixture, redirects={str(fixture.nodes["tail"]): str(new)})
    run_until_quiet(pg_engine, fixture, reader)
    assert states(pg_engine, jcs) == [("COMPLETED", None)] * 10
    assert bodies(pg_engine, fixture) == sorted(
        [f"old Ann{i}" for i in range(10)] + [f"new Ann{i}" for i in range(10)]
    )
