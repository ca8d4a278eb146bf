"""The published JSON Schemas and the worker's argument checks say the same thing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tasks.arguments import SIGNATURES, check_kwargs, uuid_arg
from tasks.errors import BadMessage

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


@pytest.mark.parametrize("task_name", sorted(SIGNATURES))
def test_schema_matches_the_worker(task_name: str) -> None:
    schema = json.loads((SCHEMAS / f"{task_name}.json").read_text())
    required, optional = SIGNATURES[task_name]
    assert set(schema["required"]) == required
    assert set(schema["properties"]) == required | optional
    assert schema["additionalProperties"] is False


def test_every_schema_file_is_a_task() -> None:
    assert {p.stem for p in SCHEMAS.glob("*.json")} == set(SIGNATURES)


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
