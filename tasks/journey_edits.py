"""Live journey edits: where a contact goes whose current node upstream deleted. Plain function
over the journey's live nodes, its redirect map and the node the contact came from.

In order (docs/contract.md, "Editing a live journey"):
1. The redirect map sent with journeys.journey_updated: {deleted: new} sends the contact to the
   new node (followed through chains of later edits); {deleted: null} ends its journey there.
2. Else the edge from the node the contact came from, as that node is now, without running that
   node's effect again: a wait's, send's, update's or webhook's next_node_id; a condition
   evaluated again on the contact's attributes now; a split's (deterministic) branch. So
   re-pointing a wait at a new send and deleting the old one sends waiting contacts to the new
   one; an edge that now ends the journey completes it.
3. Else nothing tells: the caller holds the contact PAUSED `node_not_found` (visible, never
   failed or dropped) until a later journeys.journey_updated gives a map or fixes the graph.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from tasks.errors import PermanentError
from tasks.lookups import NodeRecord
from tasks.node_config import parse_node_config
from tasks.nodes import ContactView, decide

# The journey contact's status_reason (held) or the outcome's detail (redirected, ended).
NODE_NOT_FOUND = "node_not_found"
NODE_REMOVED = "node_removed"
REDIRECTED = "redirected"
JOURNEY_EDIT_OUTCOMES = (REDIRECTED, NODE_REMOVED, NODE_NOT_FOUND)
REDIRECT_MAP = "redirect_map"
PREVIOUS_NODE = "previous_node"
# Chains of redirects (an edit of an edit) are followed this far; a cycle stops there.
MAX_REDIRECT_HOPS = 8
# The nodes whose routing is decided from the contact, not a fixed next_node_id.
ROUTING_NODES = ("condition", "split")


@dataclass(frozen=True)
class Reroute:
    """Go to `to_node_id` (None: the journey ends for the contact), by `rule`."""

    to_node_id: uuid.UUID | None
    rule: str

    def result(self, from_node_id: uuid.UUID) -> dict[str, object]:
        to = str(self.to_node_id) if self.to_node_id else None
        return {"redirected": {"from": str(from_node_id), "to": to, "rule": self.rule}}


def reroute(
    missing: uuid.UUID,
    nodes: Mapping[uuid.UUID, NodeRecord],
    redirects: Mapping[uuid.UUID, uuid.UUID | None],
    previous_node_id: uuid.UUID | None,
    contact: ContactView,
    db_now: datetime,
) -> Reroute | None:
    """Where the contact at the deleted node `missing` goes; None when nothing says (hold it).

    `nodes`: the journey's live nodes by id; `redirects`: the journey's redirect map.
    """
    if missing in redirects:
        target = redirects[missing]
        for _ in range(MAX_REDIRECT_HOPS):
            if target is None or target in nodes or target not in redirects:
                break
            target = redirects[target]
        if target is None or target in nodes:
            return Reroute(target, REDIRECT_MAP)
        return None
    previous = nodes.get(previous_node_id) if previous_node_id else None
    if previous is None:
        return None
    edge = previous.next_node_id
    if previous.type in ROUTING_NODES:
        try:
            config = parse_node_config(previous.type, previous.config)
            edge = decide(
                previous.type,
                config,
                node_id=previous.id,
                next_node_id=previous.next_node_id,
                contact=contact,
                db_now=db_now,
            ).next_node_id
        except PermanentError:
            return None
    if edge is not None and edge not in nodes:
        return None
    return Reroute(edge, PREVIOUS_NODE)
