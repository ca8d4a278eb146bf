"""tasks/journey_edits.py's rules as plain functions: where a contact at a deleted node goes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tasks.journey_edits import PREVIOUS_NODE, REDIRECT_MAP, Reroute, reroute
from tasks.lookups import NodeRecord
from tasks.nodes import ContactView

JOURNEY = uuid.uuid4()
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def node(type_: str, config: dict, next_node: uuid.UUID | None = None) -> NodeRecord:
    return NodeRecord(uuid.uuid4(), JOURNEY, type_, config, next_node)


def contact(**attributes: object) -> ContactView:
    return ContactView(uuid.uuid4(), "+15550000000", None, dict(attributes), False)


def test_the_map_wins_and_chains_are_followed() -> None:
    live = node("send_sms", {"body": "x"})
    gone, gone_too = uuid.uuid4(), uuid.uuid4()
    nodes = {live.id: live}
    redirects = {gone: gone_too, gone_too: live.id}
    assert reroute(gone, nodes, redirects, None, contact(), NOW) == Reroute(live.id, REDIRECT_MAP)


def test_a_map_to_null_ends_the_journey_and_a_cycle_or_a_dead_end_holds() -> None:
    gone, other = uuid.uuid4(), uuid.uuid4()
    assert reroute(gone, {}, {gone: None}, None, contact(), NOW) == Reroute(None, REDIRECT_MAP)
    assert reroute(gone, {}, {gone: other, other: gone}, None, contact(), NOW) is None
    assert reroute(gone, {}, {gone: other}, None, contact(), NOW) is None


def test_the_previous_nodes_edge_as_it_is_now() -> None:
    new = node("send_sms", {"body": "new"})
    wait = node("wait", {"seconds": 60}, new.id)
    nodes = {n.id: n for n in (new, wait)}
    assert reroute(uuid.uuid4(), nodes, {}, wait.id, contact(), NOW) == Reroute(
        new.id, PREVIOUS_NODE
    )
    ending = node("wait", {"seconds": 60}, None)
    assert reroute(uuid.uuid4(), {ending.id: ending}, {}, ending.id, contact(), NOW) == Reroute(
        None, PREVIOUS_NODE
    )


def test_a_condition_is_evaluated_again_and_a_vanished_branch_holds() -> None:
    gold, basic = node("send_sms", {"body": "g"}), node("send_sms", {"body": "b"})
    gone = uuid.uuid4()
    check = node(
        "condition",
        {
            "field": "plan",
            "op": "eq",
            "value": "pro",
            "true_node_id": str(gone),
            "false_node_id": str(basic.id),
        },
    )
    nodes = {n.id: n for n in (gold, basic, check)}
    # The contact's plan changed while it waited: the condition now sends it to basic.
    assert reroute(gone, nodes, {}, check.id, contact(plan="free"), NOW) == Reroute(
        basic.id, PREVIOUS_NODE
    )
    # Still pro: the branch points at the deleted node: nothing says where, hold.
    assert reroute(gone, nodes, {}, check.id, contact(plan="pro"), NOW) is None


def test_no_previous_node_or_a_previous_node_also_gone_holds() -> None:
    assert reroute(uuid.uuid4(), {}, {}, None, contact(), NOW) is None
    assert reroute(uuid.uuid4(), {}, {}, uuid.uuid4(), contact(), NOW) is None
