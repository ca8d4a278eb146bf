"""What a run left in the database: a position-keyed signature to compare two modes, and the
check that every walker finished with one execution per node and its messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, select

from bench.seed import BenchJourney, Walker
from db.models import Contact, JourneyContact, JourneyNodeExecution, Message


def effects(engine: Engine, journey: BenchJourney, walkers: Sequence[Walker]) -> list[Any]:
    """What the walkers' steps left in the database, with ids replaced by positions, so two
    modes' runs over walkers with the same indexes compare equal when they had the same effects."""
    position = {n: i for i, n in enumerate(journey.node_ids)}
    jc_ids = [w.journey_contact_id for w in walkers]
    JNE = JourneyNodeExecution
    with engine.connect() as conn:
        jcs = {
            r.id: r
            for r in conn.execute(
                select(
                    JourneyContact.id,
                    JourneyContact.status,
                    JourneyContact.step_seq,
                    JourneyContact.current_node_id,
                    JourneyContact.status_reason,
                    JourneyContact.completed_at.is_not(None).label("completed"),
                    JourneyContact.due_at.is_(None).label("no_due"),
                ).where(JourneyContact.id.in_(jc_ids))
            )
        }
        executions: dict[Any, list[Any]] = {}
        for r in conn.execute(
            select(
                JNE.journey_contact_id,
                JNE.step_seq,
                JNE.node_id,
                JNE.status,
                JNE.result,
                JNE.error,
                JNE.executed_at.is_not(None),
                Message.body,
                Message.status,
                Message.direction,
            )
            .outerjoin(Message, Message.journey_node_execution_id == JNE.id)
            .where(JNE.journey_contact_id.in_(jc_ids))
            .order_by(JNE.step_seq)
        ):
            executions.setdefault(r[0], []).append(
                (r[1], position.get(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9])
            )
        attributes = {
            r.id: r.attributes
            for r in conn.execute(
                select(Contact.id, Contact.attributes).where(
                    Contact.id.in_([w.contact_id for w in walkers])
                )
            )
        }
    signature = []
    for w in walkers:
        jc = jcs[w.journey_contact_id]
        signature.append(
            (
                w.index,
                (
                    jc.status,
                    jc.step_seq,
                    position.get(jc.current_node_id),
                    jc.status_reason,
                    jc.completed,
                    jc.no_due,
                ),
                tuple(executions.get(w.journey_contact_id, ())),
                attributes[w.contact_id],
            )
        )
    return signature


def check_walked(engine: Engine, journey: BenchJourney, walkers: Sequence[Walker]) -> str | None:
    """None if every walker COMPLETED with one execution per node and its messages; else why."""
    ids = [w.journey_contact_id for w in walkers]
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(JourneyContact.status, func.count())
                .where(JourneyContact.id.in_(ids))
                .group_by(JourneyContact.status)
            ).all()
        )
        executions = conn.execute(
            select(func.count())
            .select_from(JourneyNodeExecution)
            .where(JourneyNodeExecution.journey_contact_id.in_(ids))
        ).scalar_one()
        messages = conn.execute(
            select(func.count())
            .select_from(Message)
            .join(
                JourneyNodeExecution, JourneyNodeExecution.id == Message.journey_node_execution_id
            )
            .where(JourneyNodeExecution.journey_contact_id.in_(ids))
        ).scalar_one()
    want_exec = len(walkers) * len(journey.node_ids)
    want_msg = len(walkers) * journey.sms_nodes
    if statuses != {"COMPLETED": len(walkers)} or executions != want_exec or messages != want_msg:
        return (
            f"expected {len(walkers)} COMPLETED, {want_exec} executions, {want_msg} messages; "
            f"found {statuses}, {executions} executions, {messages} messages"
        )
    return None
