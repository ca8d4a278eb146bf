"""The published node schemas are the node configs' check: they are valid schemas, there is one
per node type, and they accept and reject exactly what the hand-written parser they replaced
did (tests/legacy_node_config.py), with messages as good."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tasks import schemas
from tasks.errors import InvalidNodeConfig
from tasks.node_config import READERS, check_node_config, parse_node_config
from tests import legacy_node_config as legacy
from tests.properties import property_settings

ALL_SCHEMAS = sorted(schemas.SCHEMA_DIR.glob("*.json")) + sorted(
    schemas.NODE_SCHEMA_DIR.glob("*.json")
)


@pytest.mark.parametrize("path", ALL_SCHEMAS, ids=lambda p: p.name)
def test_every_published_schema_is_a_valid_draft_2020_12_schema(path) -> None:
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False


# A node type whose schema is published ahead of its reader (none now).
AWAITING_READER: set[str] = set()


def test_every_node_type_has_a_schema_and_every_schema_a_node_type() -> None:
    assert set(schemas.node_types()) - AWAITING_READER == set(READERS)
    for node_type in AWAITING_READER - set(READERS):
        with pytest.raises(InvalidNodeConfig, match="unknown node type"):
            parse_node_config(node_type, {})


def outcome(parse: Any, node_type: str, config: object) -> tuple[bool, Any]:
    if parse is parse_node_config and node_type not in READERS:
        parse = check_only  # a schema awaiting its reader: whether it accepts, and why not
    try:
        parsed = parse(node_type, config)
    except InvalidNodeConfig as exc:
        return False, exc.reason
    if parsed is None:
        return True, None
    fields = dataclasses.asdict(parsed)
    fields.pop("transactional", None)  # new in the schema (UPSTREAM_CONTRACT.md)
    return True, fields


def check_only(node_type: str, config: object) -> None:
    check_node_config(node_type, config)


U = str(uuid.UUID(int=7))

# (type, config, today's message or None when valid). The messages are today's, word for word,
# except where a better one is noted.
TABLE: list[tuple[str, object, str | None]] = [
    ("send_sms", {"body": "Hi {{first_name}}"}, None),
    ("send_sms", {"body": "x" * 1600}, None),
    ("send_sms", {}, "send_sms needs a non-empty string body"),
    ("send_sms", {"body": " \n\u00a0"}, "send_sms needs a non-empty string body"),
    ("send_sms", {"body": 5}, "send_sms needs a non-empty string body"),
    ("send_sms", {"body": "x" * 1601}, "send_sms body longer than 1600 characters"),
    ("send_sms", {"body": "x", "extra": 1}, "unknown key(s) extra"),
    ("wait", {"seconds": 0}, None),
    ("wait", {"seconds": 3600.5}, None),
    ("wait", {"until": "2026-12-01T09:00:00Z"}, None),
    ("wait", {"until": "2026-12-01T09:00:00+02:00"}, None),
    ("wait", {"seconds": 158112000}, None),
    ("wait", {"seconds": 158112000.5}, "wait seconds must be a number from 0 to 158112000"),
    ("wait", {"seconds": -1}, "wait seconds must be a number from 0 to 158112000"),
    ("wait", {"seconds": True}, "wait seconds must be a number from 0 to 158112000"),
    ("wait", {"seconds": math.inf}, "wait seconds must be a number from 0 to 158112000"),
    ("wait", {"seconds": math.nan}, "wait seconds must be a number from 0 to 158112000"),
    ("wait", {"seconds": 1, "until": "2026-01-01T00:00:00Z"}, "wait needs exactly one"),
    ("wait", {}, "wait needs exactly one of seconds or until"),
    ("wait", {"until": "2026-01-01T00:00:00"}, "wait until needs a time zone (Z or +hh:mm)"),
    ("wait", {"until": "tomorrow"}, "wait until is not an ISO-8601 time: 'tomorrow'"),
    ("wait", {"until": 12}, "wait until is not an ISO-8601 time: 12"),
    ("condition", {"field": "a", "op": "exists"}, None),
    ("condition", {"field": "a", "op": "in", "value": [1], "true_node_id": U}, None),
    ("condition", {"field": "a", "op": "eq", "value": None, "false_node_id": U.upper()}, None),
    ("condition", {"op": "eq", "value": 1}, "condition needs a field name"),
    ("condition", {"field": "a", "op": "like", "value": 1}, "condition op must be one of eq,"),
    ("condition", {"field": "a", "op": "in", "value": 1}, "condition op in needs a list value"),
    # Today: "condition op eq needs a value".
    ("condition", {"field": "a", "op": "eq"}, "condition needs a value for every op but exists"),
    (
        "condition",
        {"field": "a", "op": "eq", "value": 1, "true_node_id": "x"},
        "true_node_id must be a node id (uuid) or null, got 'x'",
    ),
    ("split", {"branches": [{"weight": 1, "node_id": None}, {"weight": 0, "node_id": U}]}, None),
    ("split", {"branches": [{"weight": 2.5}]}, None),
    ("split", {"branches": []}, "split needs a non-empty list of branches"),
    ("split", {"branches": [{"weight": 0, "node_id": None}]}, "split weights must add up"),
    # Today: "split branch 1 needs a weight >= 0".
    ("split", {"branches": [{"weight": 1}, {"weight": -1}]}, "split branch needs a weight >= 0"),
    ("split", {"branches": [{"weight": 1}, {}]}, "split branch needs a weight >= 0"),
    ("split", {"branches": ["x"]}, "split branch must be an object (branches[0])"),
    ("update_contact", {"set": {"plan": "max"}}, None),
    ("update_contact", {"set": {}}, "update_contact needs a non-empty set object"),
    ("webhook", {"url": "https://hooks.example/x?token=abc"}, None),
    ("webhook", {"url": "HTTP://X.test", "method": "patch", "timeout_seconds": 20}, None),
    ("webhook", {"url": "ftp://x"}, "webhook url must be an http(s) URL with a host"),
    ("webhook", {"url": "http://x.test:0/"}, "webhook url must be an http(s) URL with a host"),
    ("webhook", {"url": "http://[::1/"}, "webhook url must be an http(s) URL with a host"),
    ("webhook", {"url": "http://a b/"}, "webhook url must not contain whitespace"),
    ("webhook", {"url": "https://x.test", "method": "GET"}, "webhook method must be one of"),
    ("webhook", {"url": "https://x.test", "timeout_seconds": 20}, None),
    ("webhook", {"url": "https://x.test", "timeout_seconds": 1e-9}, None),
    ("webhook", {"url": "https://x.test", "timeout_seconds": 20.5}, "webhook timeout_seconds"),
    (
        "webhook",
        {"url": "https://x.test", "timeout_seconds": 99},
        "webhook timeout_seconds must be in (0, 20]",
    ),
    (
        "webhook",
        {"url": "https://x.test", "timeout_seconds": 0},
        "webhook timeout_seconds must be in",
    ),
    ("exit", {}, None),
    ("exit", {"why": 1}, "unknown key(s) why"),
    ("exit", ["not", "a", "dict"], "config must be an object, got list"),
    ("teleport", {}, "unknown node type 'teleport'"),
    # Awaiting its reader: the schema, against the two-way branch's parser.
    ("wait_for_event", {"event": "link_clicked", "timeout_seconds": 3600}, None),
    ("wait_for_event", {"event": "x", "timeout_seconds": 1, "where": None}, None),
    ("wait_for_event", {"event": " ", "timeout_seconds": 1}, "wait_for_event needs an event"),
    ("wait_for_event", {"event": "x" * 129, "timeout_seconds": 1}, "wait_for_event needs an"),
    ("wait_for_event", {"event": "x"}, "wait_for_event timeout_seconds must be a number in"),
    ("wait_for_event", {"event": "x", "timeout_seconds": 0}, "wait_for_event timeout_seconds"),
    ("wait_for_event", {"event": "x", "timeout_seconds": 1, "where": []}, "wait_for_event where"),
]


@pytest.mark.parametrize(("node_type", "config", "message"), TABLE)
def test_the_schema_accepts_and_rejects_what_the_parser_did(
    node_type: str, config: object, message: str | None
) -> None:
    new = outcome(parse_node_config, node_type, config)
    old = outcome(legacy.parse_node_config, node_type, config)
    assert new[0] == old[0]
    if message is None:
        assert new == old or node_type not in READERS
    else:
        assert new[1].startswith(f"invalid_node_config: {message}"), new[1]


def test_deliberate_differences_from_the_old_parser() -> None:
    """Where the worker accepted more than the published schema allowed, the schema wins."""
    braces = {"field": "a", "op": "exists", "true_node_id": "{" + U + "}"}
    assert outcome(legacy.parse_node_config, "condition", braces)[0]
    assert not outcome(parse_node_config, "condition", braces)[0]
    # UPSTREAM_CONTRACT.md: send_sms may say it is transactional.
    assert parse_node_config("send_sms", {"body": "x", "transactional": True}).transactional
    assert (
        "transactional"
        in outcome(parse_node_config, "send_sms", {"body": "x", "transactional": "yes"})[1]
    )


def test_webhook_urls_are_never_echoed() -> None:
    for url in ("ftp://user:pw@host.example/?token=abc", "http:///?token=abc", "http://a b/?t=abc"):
        reason = outcome(parse_node_config, "webhook", {"url": url})[1]
        assert "pw" not in reason and "abc" not in reason


# --- property: the schema and the old parser agree on generated configs ----------------------

node_ids = st.one_of(
    st.none(),
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex.upper()),
    st.uuids().map(lambda u: f"{u}\n"),
    st.text(max_size=8),
    st.integers(-5, 5),
)
# Each field's bounds and their neighbours, often: that is where a schema and a parser differ.
bounds = st.sampled_from(
    [0, -0.0, -1, 1e-9, 5e-324, 5, 20, 20.5, 21, 158112000, 158112000.5, 158112001]
)
numbers = st.one_of(
    *[bounds] * 6,
    st.integers(-(10**12), 10**12),
    st.floats(),
    st.booleans(),
    st.sampled_from(["5", None, [], {}]),
)
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\t\n", "\u00a0", "\u200b", "\x1c", "x" * 1600, "x" * 1601]),
    st.integers(),
    st.none(),
)
times = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01", "2026-01-01T00:00z", "soon", ""]),
    st.integers(),
    st.none(),
)
good_urls = st.sampled_from(["https://hooks.example/a?b=c", "HTTP://X.TEST", "http://[::1]:8080/"])
urls = st.one_of(
    *[good_urls] * 6,
    st.sampled_from(
        [
            "https://hooks.example/a?b=c",
            "HTTP://X.TEST",
            "http://x.test:0/",
            "http://x.test:65536/",
            "http://[::1]:8080/",
            "http://[::1/",
            "http:///path",
            "https://a b/",
            "https://x.test/\x7f",
            " https://x.test/",
            "https://x.test/\n",
            "ftp://x.test/",
            "mailto:x@y",
        ]
    ),
    st.text(max_size=10).map(lambda t: f"https://{t}"),
    st.integers(),
)
any_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=5,
)
branch = st.one_of(
    st.fixed_dictionaries({}, optional={"weight": numbers, "node_id": node_ids, "note": texts}),
    any_json,
)

FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "send_sms": {"body": texts},
    "wait": {"seconds": numbers, "until": times},
    "condition": {
        "field": texts,
        "op": st.one_of(st.sampled_from([*legacy.CONDITION_OPS, "like", "EQ"]), any_json),
        "value": any_json,
        "true_node_id": node_ids,
        "false_node_id": node_ids,
    },
    "split": {"branches": st.one_of(st.lists(branch, max_size=4), any_json)},
    "update_contact": {"set": any_json},
    "webhook": {
        "url": urls,
        "method": st.one_of(
            *[st.sampled_from(["POST", "post", "Put", "pAtCh"])] * 3,
            st.sampled_from(["GET", "", "POST\n", " PUT"]),
            any_json,
        ),
        "timeout_seconds": numbers,
    },
    "exit": {},
    "wait_for_event": {
        "event": texts,
        "timeout_seconds": numbers,
        "matched_node_id": node_ids,
        "timeout_node_id": node_ids,
        "where": any_json,
    },
}


# The shapes each type is written in, every field drawn from valid and invalid values.
FORMS: dict[str, list[tuple[str, ...]]] = {
    "send_sms": [("body",)],
    "wait": [("seconds",), ("until",)],
    "condition": [("field", "op", "value", "true_node_id", "false_node_id"), ("field", "op")],
    "split": [("branches",)],
    "update_contact": [("set",)],
    "webhook": [("url",), ("url", "method", "timeout_seconds")],
    "exit": [()],
    "wait_for_event": [
        ("event", "timeout_seconds"),
        ("event", "timeout_seconds", "matched_node_id", "timeout_node_id", "where"),
    ],
}


def configs(node_type: str) -> st.SearchStrategy[object]:
    fields = FIELDS[node_type]
    forms = [st.fixed_dictionaries({k: fields[k] for k in form}) for form in FORMS[node_type]]
    # Besides: any subset of the fields, an unknown key now and then, and not an object at all.
    loose = st.fixed_dictionaries({}, optional=fields | {"bogus": st.integers()}).filter(
        lambda c: "bogus" not in c or len(c) % 3 == 0
    )
    return st.one_of(*forms * 4, loose, any_json)


@pytest.mark.parametrize("node_type", schemas.node_types())
@property_settings(max_examples=500)
@given(data=st.data())
def test_schema_and_old_parser_agree_on_generated_configs(node_type: str, data: st.DataObject):
    config = data.draw(configs(node_type), label="config")
    new = outcome(parse_node_config, node_type, config)
    old = outcome(legacy.parse_node_config, node_type, config)
    assert new[0] == old[0], (new, old)
    if new[0] and node_type in READERS:
        assert new == old


@pytest.mark.parametrize("node_type", schemas.node_types())
def test_every_example_in_a_node_schema_is_accepted(node_type: str) -> None:
    schema = json.loads((schemas.NODE_SCHEMA_DIR / f"{node_type}.json").read_text())
    assert schema["examples"]
    for example in schema["examples"]:
        assert outcome(parse_node_config, node_type, example)[0]
        if node_type in AWAITING_READER:
            assert outcome(legacy.parse_node_config, node_type, example)[0]
