"""Exports' contents: CSV and JSON lines of a journey's executions and messages, through the API
and `journey-worker export`, checked against the tables (a text that trips CSV and JSON, tenancy,
UTC timestamps). Memory and disconnects: tests/api/test_api_serve.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from db import engine as db_engine
from tests.api.conftest import KEY_A, TRICKY_BODY, World, bearer
from worker.cli import main
from worker.settings import use_settings

CONTRACT_COLUMNS = ["id", "journey_contact_id", "node_id", "status", "executed_at"]


def parse(body: bytes, fmt: str) -> list[dict[str, Any]]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert body.endswith(b"\n")
    return [json.loads(line) for line in body.split(b"\n")[:-1]]


def truth(engine: Engine, kind: str, world: World) -> dict[str, dict[str, Any]]:
    sql = {
        "executions": "SELECT e.id, e.status, e.node_id, e.executed_at, n.type AS node_type "
        "FROM journey_node_executions e JOIN journey_contacts jc ON jc.id = e.journey_contact_id "
        "LEFT JOIN journey_nodes n ON n.id = e.node_id WHERE jc.journey_id = :j",
        "messages": "SELECT m.id, m.status, m.body, e.node_id FROM messages m "
        "JOIN journey_node_executions e ON e.id = m.journey_node_execution_id "
        "JOIN journey_contacts jc ON jc.id = e.journey_contact_id WHERE jc.journey_id = :j",
    }[kind]
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {"j": world.a.journey.journey_id}).mappings()
        return {str(row["id"]): dict(row) for row in rows}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("kind", ["executions", "messages"])
def test_an_export_holds_exactly_the_journeys_rows(
    client: TestClient, world: World, pg_engine: Engine, kind: str, fmt: str
) -> None:
    journey = world.a.journey.journey_id
    response = client.get(f"/v1/journeys/{journey}/{kind}.{fmt}", headers=bearer(KEY_A))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(
        {"csv": "text/csv", "jsonl": "application/x-ndjson"}[fmt]
    )
    assert f'filename="journey-{journey}-{kind}.{fmt}"' in response.headers["content-disposition"]
    rows = parse(response.content, fmt)
    expected = truth(pg_engine, kind, world)
    assert len(rows) == len(expected) and {r["id"] for r in rows} == set(expected)
    assert expected  # the journey has rows: an empty export would prove nothing
    if kind == "executions":
        if fmt == "csv":
            assert response.content.split(b"\n")[0].decode().split(",")[:5] == CONTRACT_COLUMNS
        for row in rows:
            want = expected[row["id"]]
            assert row["status"] == want["status"] and row["node_type"] == want["node_type"]
            assert row["executed_at"] == want["executed_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    else:
        assert {r["id"]: r["body"] for r in rows} == {i: w["body"] for i, w in expected.items()}
        assert TRICKY_BODY in [row["body"] for row in rows]


def test_an_empty_journey_exports_a_header_only(
    client: TestClient, world: World, pg_engine: Engine
) -> None:
    empty = world.a.journeys[-1]  # a journey with no contacts
    csv_body = client.get(f"/v1/journeys/{empty}/executions.csv", headers=bearer(KEY_A)).content
    assert csv_body.decode().startswith(",".join(CONTRACT_COLUMNS)) and csv_body.count(b"\n") == 1
    assert client.get(f"/v1/journeys/{empty}/messages.jsonl", headers=bearer(KEY_A)).content == b""


def run_cli(pg_url: str, *args: str) -> Any:
    db_engine.use_engine(None)
    use_settings(None)
    try:
        return CliRunner().invoke(main, list(args), env={"DATABASE_URL": pg_url})
    finally:
        engine = db_engine._engine
        db_engine.use_engine(None)
        use_settings(None)
        if engine is not None:
            engine.dispose()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("kind", ["executions", "messages"])
def test_the_cli_exports_what_the_api_exports(
    client: TestClient, world: World, pg_url: str, tmp_path: Path, kind: str, fmt: str
) -> None:
    journey = world.a.journey.journey_id
    api_rows = parse(
        client.get(f"/v1/journeys/{journey}/{kind}.{fmt}", headers=bearer(KEY_A)).content, fmt
    )
    output = tmp_path / f"out.{fmt}"
    result = run_cli(
        pg_url, "export", str(journey), "--what", kind, "--format", fmt, "-o", str(output)
    )
    assert result.exit_code == 0, result.output
    assert not (tmp_path / f"out.{fmt}.partial").exists()
    cli_rows = parse(output.read_bytes(), fmt)
    key = lambda row: row["id"]  # noqa: E731
    assert sorted(cli_rows, key=key) == sorted(api_rows, key=key)


def test_the_cli_export_to_stdout_and_its_errors(world: World, pg_url: str) -> None:
    journey = world.a.journey.journey_id
    result = run_cli(pg_url, "export", str(journey), "--what", "messages", "--format", "jsonl")
    assert result.exit_code == 0
    assert TRICKY_BODY in [json.loads(line)["body"] for line in result.stdout.splitlines()]
    unknown = run_cli(pg_url, "export", "00000000-0000-0000-0000-000000000000")
    assert unknown.exit_code == 1 and "no such journey" in unknown.output


def test_export_and_stats_refuse_sqlite_with_one_line(tmp_path: Path) -> None:
    for args in (
        ["export", "00000000-0000-0000-0000-000000000000"],
        ["stats", "00000000-0000-0000-0000-000000000000"],
    ):
        db_engine.use_engine(None)
        use_settings(None)
        result = CliRunner().invoke(
            main, args, env={"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
        )
        db_engine.use_engine(None)
        use_settings(None)
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and "needs PostgreSQL" in result.output
