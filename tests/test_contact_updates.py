"""journeys.update_contacts: one statement merges attributes into up to a thousand contacts;
unknown and other tenants' ids are skipped; malformed messages fail once, without a retry."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from db.contact_updates import merge_attributes
from db.engine import transaction
from db.models import Contact
from tasks.arguments import contact_updates_arg
from tasks.errors import BadMessage
from tests.e2e_rig import Rig, rows, scalar
from tests.factories import make_contacts, make_tenant
from tests.kombu_producer import KombuProducer
from tests.worker_process import wait_until

UPDATE_CONTACTS = "journeys.update_contacts"


def attributes(db: Engine, contact_id: uuid.UUID) -> dict[str, Any]:
    with db.connect() as conn:
        return conn.execute(select(Contact.attributes).where(Contact.id == contact_id)).scalar_one()


# -- arguments ---------------------------------------------------------------------------------


def test_updates_are_checked_and_duplicates_merged_in_order() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    merged = contact_updates_arg(
        {
            "updates": [
                {"contact_id": str(a), "set": {"plan": "pro", "tier": 1}},
                {"contact_id": str(b), "set": {"plan": "basic"}},
                {"contact_id": str(a), "set": {"tier": 2}},
            ]
        },
        "updates",
        1000,
    )
    assert merged == {a: {"plan": "pro", "tier": 2}, b: {"plan": "basic"}}

    def problem(updates: object, limit: int = 1000) -> str:
        with pytest.raises(BadMessage) as caught:
            contact_updates_arg({"updates": updates}, "updates", limit)
        return caught.value.reason

    ok = {"contact_id": str(a), "set": {"x": 1}}
    assert "non-empty list" in problem([])
    assert "non-empty list" in problem({"contact_id": str(a)})
    assert problem([ok, ok], limit=1) == "updates has 2 entries; at most 1 per message"
    assert problem([ok, "x"]) == "updates[1] must be an object with contact_id and set"
    assert problem([{"contact_id": str(a)}]) == "updates[0]: missing set"
    assert problem([ok | {"phone": "+1"}]) == "updates[0]: unknown phone"
    assert problem([{"contact_id": "nope", "set": {"x": 1}}]) == (
        "updates[0].contact_id is not a UUID: 'nope'"
    )
    assert (
        problem([{"contact_id": str(a), "set": {}}]) == "updates[0].set must be a non-empty object"
    )
    assert problem([{"contact_id": str(a), "set": [1]}]) == (
        "updates[0].set must be a non-empty object"
    )


# -- the statement, on both databases ------------------------------------------------------------


def test_one_statement_merges_and_skips_unknown_and_foreign_ids(store_engine: Engine) -> None:
    tenant, other = make_tenant(store_engine), make_tenant(store_engine, name="Other")
    ours = make_contacts(store_engine, tenant, 3)
    theirs = make_contacts(store_engine, other, 1)[0]
    unknown = uuid.uuid4()
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "SELECT")):
            statements.append(statement)

    event.listen(store_engine, "before_cursor_execute", count)
    try:
        with transaction() as session:
            updated = merge_attributes(
                session,
                tenant,
                {
                    ours[0]: {"plan": "gold", "score": 7},
                    ours[1]: {"nickname": None},
                    theirs: {"plan": "stolen"},
                    unknown: {"plan": "nobody"},
                },
            )
    finally:
        event.remove(store_engine, "before_cursor_execute", count)
    assert updated == {ours[0], ours[1]}
    if store_engine.dialect.name == "postgresql":
        assert len(statements) == 1, statements
    # A shallow merge: new keys added, existing ones replaced, the rest kept, null stored.
    assert attributes(store_engine, ours[0]) == {"first_name": "Ann0", "plan": "gold", "score": 7}
    assert attributes(store_engine, ours[1]) == {
        "first_name": "Ann1",
        "plan": "pro",
        "nickname": None,
    }
    assert attributes(store_engine, ours[2]) == {"first_name": "Ann2", "plan": "pro"}
    assert attributes(store_engine, theirs) == {"first_name": "Ann0", "plan": "pro"}


def test_a_thousand_updates_in_one_statement(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    ids = make_contacts(pg_engine, tenant, 1000)
    with transaction() as session:
        updated = merge_attributes(session, tenant, {c: {"batch": i} for i, c in enumerate(ids)})
    assert updated == set(ids)
    assert (
        scalar(pg_engine, "SELECT count(*) FROM contacts WHERE (attributes->>'batch')::int >= 0")
        == 1000
    )


# -- end to end: a real worker, each broker ------------------------------------------------------


@pytest.mark.slow
def test_worker_updates_contacts_and_rejects_bad_messages_once(
    rig: Rig, broker_url: str, producer: KombuProducer
) -> None:
    db = rig.db
    tenant, other = make_tenant(db), make_tenant(db, name="Other")
    ours = make_contacts(db, tenant, 3)
    theirs = make_contacts(db, other, 1)[0]
    t = str(tenant)
    rig.start(rig.env(broker_url))

    good = producer.publish(
        UPDATE_CONTACTS,
        {
            "tenant_id": t,
            "updates": [
                {"contact_id": str(ours[0]), "set": {"plan": "gold"}},
                {"contact_id": str(theirs), "set": {"plan": "stolen"}},
                {"contact_id": str(uuid.uuid4()), "set": {"plan": "nobody"}},
                {"contact_id": str(ours[0]), "set": {"score": 3}},
            ],
        },
    )
    bad_cases = {
        producer.publish(UPDATE_CONTACTS, {"tenant_id": t}): "missing argument(s) updates",
        producer.publish(
            UPDATE_CONTACTS, {"tenant_id": t, "updates": [{"contact_id": str(ours[1])}]}
        ): "updates[0] needs set",
        producer.publish(
            UPDATE_CONTACTS,
            {
                "tenant_id": t,
                "updates": [
                    {"contact_id": str(uuid.uuid4()), "set": {"x": 1}} for _ in range(1001)
                ],
            },
        ): "updates has 1001 entries; at most 1000 per message",
    }
    wait_until(
        lambda: scalar(db, "SELECT count(*) FROM task_failures") >= len(bad_cases), timeout=30
    )
    wait_until(lambda: attributes(db, ours[0]).get("score") == 3, timeout=30)

    assert attributes(db, ours[0]) == {"first_name": "Ann0", "plan": "gold", "score": 3}
    assert attributes(db, theirs) == {"first_name": "Ann0", "plan": "pro"}
    assert attributes(db, ours[1]) == {"first_name": "Ann1", "plan": "pro"}
    failures = rows(db, "SELECT task_id, task_name, error FROM task_failures")
    assert {(r.task_id, r.task_name, r.error) for r in failures} == {
        (task_id, UPDATE_CONTACTS, error) for task_id, error in bad_cases.items()
    }
    assert good not in {r.task_id for r in failures}
    worker = rig.workers[0]
    assert worker.proc.poll() is None
    log = worker.log()
    assert "skipped 2 unknown or other tenants' contact ids" in log
    assert str(theirs) in log
    # Not retried: a permanent failure is logged once per message.
    assert log.count("Retry in") == 0
