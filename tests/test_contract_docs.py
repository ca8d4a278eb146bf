"""The published JSON Schemas and the worker's argument checks say the same thing."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks import schemas
from tasks.arguments import check_kwargs, optional_step, step_list_arg, uuid_arg, uuid_list_arg
from tasks.engine import execute_batch_kwargs
from tasks.errors import BadMessage
from tasks.schema_errors import first_problem
from tests.properties import property_settings
from worker.app import create_app
from worker.settings import WorkerSettings
from worker.signals import _require_task_schemas


def test_argument_checks_name_the_problem() -> None:
    ids = {"tenant_id": str(uuid.uuid4()), "journey_contact_id": str(uuid.uuid4())}
    with pytest.raises(BadMessage, match="missing argument\\(s\\) node_id"):
        check_kwargs("journeys.execute_node", (), ids)
    with pytest.raises(BadMessage, match="unknown argument\\(s\\) phone"):
        check_kwargs("journeys.execute_node", (), ids | {"node_id": "x", "phone": "+1"})
    with pytest.raises(BadMessage, match="positional"):
        check_kwargs("journeys.tenant_updated", ("a",), {"tenant_id": "x"})
    with pytest.raises(BadMessage, match="not a UUID"):
        uuid_arg({"tenant_id": "nope"}, "tenant_id")
    with pytest.raises(BadMessage, match="must be a UUID string"):
        uuid_arg({"tenant_id": 7}, "tenant_id")


def test_every_registered_task_has_a_schema_and_every_schema_a_task() -> None:
    app = create_app(WorkerSettings())
    app.loader.import_default_modules()
    registered = sorted(name for name in app.tasks if name.startswith("journeys."))
    assert registered == schemas.task_names()
    schemas.require_task_schemas(registered)  # each loads and is a valid schema


def test_a_task_without_a_schema_is_a_clear_failure() -> None:
    with pytest.raises(schemas.SchemaMissing, match=r"journeys\.nope"):
        schemas.require_task_schemas(["journeys.enroll", "journeys.nope"])
    with pytest.raises(schemas.SchemaMissing, match="has no schema"):
        check_kwargs("journeys.nope", (), {})


T, N = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
PAIRS = "journey_contacts must be a non-empty list of [journey_contact_id, step] pairs"


@pytest.mark.parametrize(
    ("task_name", "kwargs", "problem"),
    [
        # The worker's own messages, as it builds them, and upstream's documented forms.
        ("journeys.execute_node", {"tenant_id": T, "journey_contact_id": N, "node_id": N}, None),
        (
            "journeys.execute_node",
            {"tenant_id": T, "journey_contact_id": N, "node_id": N, "step": 3},
            None,
        ),
        (
            "journeys.execute_batch",
            execute_batch_kwargs(uuid.UUID(T), uuid.UUID(N), [(uuid.UUID(N), 0)]),
            None,
        ),
        (
            "journeys.enroll",
            {"tenant_id": T, "journey_id": N, "contact_ids": [N, N.replace("-", "")]},
            None,
        ),
        ("journeys.deliver_messages", {"tenant_id": T, "message_ids": [N] * 1000}, None),
        ("journeys.deliver_message", {"tenant_id": T, "message_id": N.upper()}, None),
        ("journeys.tenant_updated", {"tenant_id": T}, None),
        ("journeys.purge_executions", {}, None),
        ("journeys.purge_executions", {"max_batches": 5}, None),
        # Today's messages, word for word.
        (
            "journeys.execute_node",
            {"tenant_id": T, "node_id": N},
            "missing argument(s) journey_contact_id",
        ),
        ("journeys.enroll", {"tenant_id": T}, "missing argument(s) contact_ids, journey_id"),
        (
            "journeys.execute_node",
            {"tenant_id": T, "journey_contact_id": N, "node_id": N, "priority": 1},
            "unknown argument(s) priority",
        ),
        (
            "journeys.execute_node",
            {"tenant_id": T, "journey_contact_id": "not-a-uuid", "node_id": N},
            "journey_contact_id is not a UUID: 'not-a-uuid'",
        ),
        (
            "journeys.execute_node",
            {"tenant_id": T, "journey_contact_id": f"{N}\n", "node_id": N},
            "journey_contact_id is not a UUID: '00000000-0000-0000-0000-000000000002\\n'",
        ),
        (
            "journeys.execute_node",
            {"tenant_id": 7, "journey_contact_id": N, "node_id": N},
            "tenant_id must be a UUID string, got int",
        ),
        (
            "journeys.execute_node",
            {"tenant_id": T, "journey_contact_id": N, "node_id": N, "step": -1},
            "step must be a whole number >= 0, got -1",
        ),
        (
            "journeys.execute_node",
            {"tenant_id": T, "journey_contact_id": N, "node_id": N, "step": True},
            "step must be a whole number >= 0, got True",
        ),
        (
            "journeys.execute_node",
            {"tenant_id": T, "journey_contact_id": N, "node_id": N, "step": 1.5},
            "step must be a whole number >= 0, got 1.5",
        ),
        (
            "journeys.enroll",
            {"tenant_id": T, "journey_id": N, "contact_ids": [N] * 1001},
            "contact_ids has 1001 ids; at most 1000 per message",
        ),
        (
            "journeys.enroll",
            {"tenant_id": T, "journey_id": N, "contact_ids": []},
            "contact_ids must be a non-empty list of UUID strings",
        ),
        (
            "journeys.enroll",
            {"tenant_id": T, "journey_id": N, "contact_ids": N},
            "contact_ids must be a non-empty list of UUID strings",
        ),
        (
            "journeys.deliver_messages",
            {"tenant_id": T, "message_ids": [N, "x"]},
            "message_ids[1] is not a UUID: 'x'",
        ),
        ("journeys.execute_batch", {"tenant_id": T, "node_id": N, "journey_contacts": []}, PAIRS),
        ("journeys.execute_batch", {"tenant_id": T, "node_id": N, "journey_contacts": {}}, PAIRS),
        (
            "journeys.execute_batch",
            {"tenant_id": T, "node_id": N, "journey_contacts": [[N, 0], [N]]},
            "journey_contacts[1] must be a [journey_contact_id, step] pair",
        ),
        (
            "journeys.execute_batch",
            {"tenant_id": T, "node_id": N, "journey_contacts": [[N, 0, 1]]},
            "journey_contacts[0] must be a [journey_contact_id, step] pair",
        ),
        (
            "journeys.execute_batch",
            {"tenant_id": T, "node_id": N, "journey_contacts": [["x", 0]]},
            "journey_contacts[0][0] is not a UUID: 'x'",
        ),
        (
            "journeys.execute_batch",
            {"tenant_id": T, "node_id": N, "journey_contacts": [[N, -2]]},
            "journey_contacts[0][1] must be a whole number >= 0",
        ),
        (
            "journeys.purge_executions",
            {"max_batches": 0},
            "max_batches must be a whole number >= 1, got 0",
        ),
    ],
)
def test_arguments_are_checked_by_the_published_schema(
    task_name: str, kwargs: dict, problem: str | None
) -> None:
    if problem is None:
        check_kwargs(task_name, (), kwargs)
    else:
        with pytest.raises(BadMessage) as raised:
            check_kwargs(task_name, (), kwargs)
        assert raised.value.reason == problem


def test_readers_turn_checked_strings_into_typed_values() -> None:
    kwargs = {"tenant_id": T, "node_id": N, "journey_contacts": [[N, 2], [T, 1.0]]}
    check_kwargs("journeys.execute_batch", (), kwargs)
    assert step_list_arg(kwargs, "journey_contacts", 1000) == [
        (uuid.UUID(N), 2),
        (uuid.UUID(T), 1),
    ]
    assert optional_step({"step": 4.0}) == 4 and optional_step({}) is None
    # ENROLL_MAX_CONTACTS is a setting, below the contract's 1,000.
    with pytest.raises(BadMessage, match="contact_ids has 3 ids; at most 2 per message"):
        uuid_list_arg({"contact_ids": [N, N, N]}, "contact_ids", 2)


def test_the_worker_refuses_to_start_when_a_task_has_no_schema(caplog) -> None:
    class App:
        tasks = {"journeys.enroll": None, "journeys.nope": None, "celery.ping": None}

    with pytest.raises(SystemExit) as exited:
        _require_task_schemas(App())
    assert exited.value.code == 2
    assert "tasks without a schema" in caplog.text and "journeys.nope" in caplog.text


@pytest.mark.parametrize("path", sorted(schemas.SCHEMA_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_example_in_a_task_schema_is_accepted(path) -> None:
    # The schemas of other tasks may come without examples; these do.
    for example in json.loads(path.read_text()).get("examples", []):
        check_kwargs(path.stem, (), example)


# --- the fast path says yes only to what the validator accepts -----------------------------

uuids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: f"{u}\n"),
    st.text(max_size=6),
    st.integers(),
)
steps = st.one_of(st.integers(-2, 5), st.floats(), st.booleans(), st.sampled_from([1.0, "1", None]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), uuids),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=6,
)
ARGUMENT_VALUES: dict[str, st.SearchStrategy] = {
    "journey_contacts": st.lists(
        st.one_of(st.tuples(uuids, steps).map(list), st.lists(json_values, max_size=3)),
        max_size=4,
    ),
    "contact_ids": st.lists(uuids, max_size=3),
    "message_ids": st.lists(uuids, max_size=3),
    "step": steps,
    "max_batches": steps,
}


def arguments_for(task_name: str) -> st.SearchStrategy[dict]:
    schema = schemas.task_validator(task_name).schema
    fields = {
        name: st.one_of(ARGUMENT_VALUES.get(name, uuids), json_values)
        for name in schema["properties"]
    }
    required = {name: fields[name] for name in schema.get("required", [])}
    optional = {k: v for k, v in fields.items() if k not in required} | {"extra": uuids}
    return st.one_of(
        st.fixed_dictionaries(required, optional=optional),
        st.fixed_dictionaries(required),
        st.fixed_dictionaries({}, optional=fields),
    )


@pytest.mark.parametrize("task_name", schemas.task_names())
@property_settings(max_examples=300)
@given(data=st.data())
def test_the_fast_path_agrees_with_the_validator(task_name: str, data: st.DataObject) -> None:
    kwargs = data.draw(arguments_for(task_name), label="kwargs")
    fast = schemas.task_fast_path(task_name)
    assert fast is not schemas.task_validator(task_name).is_valid  # each of these compiles
    assert fast(kwargs) == schemas.task_validator(task_name).is_valid(kwargs)


def test_the_fast_types_are_the_validators() -> None:
    checker = schemas.ContractValidator.TYPE_CHECKER
    values = [0, 1.0, 1.5, True, None, "x", [], {}, float("nan"), float("inf"), 10**30]
    for name, predicate in schemas.JSON_TYPES.items():
        assert [predicate(v) for v in values] == [checker.is_type(v, name) for v in values]


def test_problems_in_keys_and_in_alternatives_are_named_in_one_line() -> None:
    uuid_pattern = (
        "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
    )
    schema = {
        "type": "object",
        "properties": {
            "m": {
                "type": "object",
                "propertyNames": {"pattern": "^a+$"},
                "additionalProperties": {
                    "oneOf": [
                        {"type": "string", "format": "uuid", "pattern": uuid_pattern},
                        {"type": "null"},
                    ]
                },
            }
        },
        "additionalProperties": False,
    }
    validator = schemas.ContractValidator(schema, format_checker=schemas.FORMATS)

    def problem(document: dict) -> str | None:
        return first_problem(validator, document, "arguments", "argument")

    assert problem({"m": {"a": None}}) is None
    assert problem({"m": {"b": None}}) == "m key 'b' does not match the pattern ^a+$"
    assert problem({"m": {"a": "y"}}) == "m.a is not a UUID: 'y'"
    assert problem({"m": {"a": 5}}) == "m.a matches none of its allowed forms"
    assert problem({"line\nbreak": 1}) == "unknown argument(s) 'line\\nbreak'"
