"""The read-only API's pages against the real PostgreSQL, in-process (TestClient): tenancy,
authentication, keyset walks (ties, concurrent inserts), cursors, limits, problem details,
request ids and the OpenAPI document."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from sqlalchemy import Engine, event, insert, text
from sqlalchemy.exc import InternalError, ProgrammingError

from api.context import RequestContextFilter
from db.models import Contact, JourneyContact
from tests.api.conftest import KEY_A, KEY_B, TRICKY_BODY, World, bearer

PROBLEM = "application/problem+json"


def walk(
    client: TestClient, path: str, key: str, limit: int, **params: Any
) -> list[dict[str, Any]]:
    """Every item of a listing, page by page, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        query = {"limit": limit, **params} | ({"cursor": cursor} if cursor else {})
        response = client.get(path, params=query, headers=bearer(key))
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert len(body["items"]) == limit  # only the last page may be short
    raise AssertionError("the walk did not end")


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def expected(engine: Engine, sql: str, **params: Any) -> list[str]:
    with engine.connect() as conn:
        return [str(row[0]) for row in conn.execute(text(sql), params)]


# -- pages: the right rows, in order, nothing missed or repeated ------------------------------


def test_journeys_of_the_tenant_only(client: TestClient, world: World, pg_engine: Engine) -> None:
    for tenant in (world.a, world.b):
        got = walk(client, "/v1/journeys", tenant.key, limit=4)
        assert ids(got) == expected(
            pg_engine,
            "SELECT id FROM journeys WHERE tenant_id = :t ORDER BY created_at, id",
            t=tenant.tenant_id,
        )
        assert len(got) == len(tenant.journeys)
    first = client.get("/v1/journeys", headers=bearer(KEY_A)).json()["items"][0]
    assert set(first) >= {"id", "name", "status", "entry_node_id", "created_at", "updated_at"}


@pytest.mark.parametrize("limit", [1, 7, 45, 1000])
def test_journey_contacts_walk_matches_the_table(
    client: TestClient, world: World, pg_engine: Engine, limit: int
) -> None:
    journey = world.a.journey.journey_id
    got = walk(client, f"/v1/journeys/{journey}/contacts", KEY_A, limit=limit)
    assert ids(got) == expected(
        pg_engine,
        "SELECT id FROM journey_contacts WHERE journey_id = :j ORDER BY created_at, id",
        j=journey,
    )
    assert len(got) == 45
    assert set(got[0]) >= {"id", "contact_id", "status", "current_node_id", "created_at"}


@pytest.mark.parametrize("status", ["ACTIVE", "FAILED", "PAUSED"])
def test_journey_contacts_filtered_by_status(
    client: TestClient, world: World, pg_engine: Engine, status: str
) -> None:
    journey = world.a.journey.journey_id
    got = walk(client, f"/v1/journeys/{journey}/contacts", KEY_A, limit=2, status=status)
    assert ids(got) == expected(
        pg_engine,
        "SELECT id FROM journey_contacts WHERE journey_id = :j AND status = :s "
        "ORDER BY created_at, id",
        j=journey,
        s=status,
    )
    assert {item["status"] for item in got} <= {status}
    assert (len(got) > 0) == (status != "PAUSED")


def test_executions_newest_first_and_messages_of_a_journey_contact(
    client: TestClient, world: World, pg_engine: Engine
) -> None:
    jc = world.a.busy
    executions = walk(client, f"/v1/journey-contacts/{jc}/executions", KEY_A, limit=3)
    assert ids(executions) == expected(
        pg_engine,
        "SELECT id FROM journey_node_executions WHERE journey_contact_id = :jc "
        "ORDER BY created_at DESC, id DESC",
        jc=jc,
    )
    assert len(executions) == 23 and executions[0]["step_seq"] >= 20
    messages = walk(client, f"/v1/journey-contacts/{jc}/messages", KEY_A, limit=2)
    assert ids(messages) == expected(
        pg_engine,
        "SELECT m.id FROM messages m JOIN journey_node_executions e "
        "ON e.id = m.journey_node_execution_id WHERE e.journey_contact_id = :jc "
        "ORDER BY e.created_at DESC, e.id DESC",
        jc=jc,
    )
    assert sorted(ids(messages)) == sorted(str(m) for m in world.a.messages)
    assert TRICKY_BODY in [message["body"] for message in messages]


def test_a_walk_while_rows_are_inserted_sees_every_old_row_once(
    client: TestClient, world: World, pg_engine: Engine
) -> None:
    """Keyset semantics under concurrent inserts, with the interleaving forced: after each page,
    rows are committed before the cursor, after it, and at the cursor's own created_at. Every
    row that existed when the walk began is seen exactly once; a new row is seen (once) exactly
    when its key sorts after the position the walk had reached when it was inserted."""
    journey = world.a.journey
    path = f"/v1/journeys/{journey.journey_id}/contacts"
    before = set(
        expected(
            pg_engine, "SELECT id FROM journey_contacts WHERE journey_id = :j", j=journey.journey_id
        )
    )
    seen: list[str] = []
    should_appear: set[str] = set()
    should_not_appear: set[str] = set()
    cursor = None
    while True:
        params = {"limit": 6} | ({"cursor": cursor} if cursor else {})
        body = client.get(path, params=params, headers=bearer(KEY_A)).json()
        seen.extend(ids(body["items"]))
        cursor = body["next_cursor"]
        if cursor is None:
            break
        last = body["items"][-1]
        with pg_engine.connect() as conn:
            position = conn.execute(
                text("SELECT created_at FROM journey_contacts WHERE id = :id"), {"id": last["id"]}
            ).scalar_one()
        # Ids on both sides of the last row's id, at its own created_at, and rows before/after.
        low = uuid.UUID(int=0x1)
        high = uuid.UUID(int=(1 << 128) - 2)
        inserts = [
            (low, position, False),
            (high, position, uuid.UUID(last["id"]) < high),
            (uuid.uuid4(), position - timedelta(seconds=30), False),
            (uuid.uuid4(), position + timedelta(hours=1), True),
        ]
        rows = []
        for jc_id, created_at, after_cursor in inserts:
            if jc_id in (low, high):  # a fixed id can only be used once
                jc_id = uuid.UUID(int=jc_id.int ^ (len(seen) << 64))
                after_cursor = (created_at, jc_id) > (position, uuid.UUID(last["id"]))
            (should_appear if after_cursor else should_not_appear).add(str(jc_id))
            rows.append((jc_id, created_at))
        contacts = [uuid.uuid4() for _ in rows]
        with pg_engine.begin() as conn:
            conn.execute(
                insert(Contact), [{"id": c, "tenant_id": world.a.tenant_id} for c in contacts]
            )
            conn.execute(
                insert(JourneyContact),
                [
                    {
                        "id": jc_id,
                        "tenant_id": world.a.tenant_id,
                        "journey_id": journey.journey_id,
                        "contact_id": contact,
                        "status": "ACTIVE",
                        "created_at": created_at,
                    }
                    for (jc_id, created_at), contact in zip(rows, contacts, strict=True)
                ],
            )
    assert len(seen) == len(set(seen)), "a row was repeated"
    assert before <= set(seen), f"missed {before - set(seen)}"
    assert should_appear <= set(seen)
    assert not should_not_appear & set(seen)
    assert should_appear and should_not_appear


def test_a_non_empty_page_is_one_statement(
    client: TestClient, world: World, read_engine: Engine
) -> None:
    """One round trip per page; the parent is looked up only when a page comes back empty."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(read_engine, "before_cursor_execute", count)
    try:
        journey = world.a.journey.journey_id
        client.get(f"/v1/journeys/{journey}/contacts", headers=bearer(KEY_A)).raise_for_status()
        assert len(statements) == 1, statements
        statements.clear()
        client.get(f"/v1/journeys/{journey}/contacts?status=PAUSED", headers=bearer(KEY_A))
        assert len(statements) == 2, statements  # empty: the journey is checked too
    finally:
        event.remove(read_engine, "before_cursor_execute", count)


# -- tenancy and authentication -----------------------------------------------------------------


def endpoints(world: World) -> list[str]:
    a = world.a
    return [
        f"/v1/journeys/{a.journey.journey_id}/contacts",
        f"/v1/journey-contacts/{a.busy}/executions",
        f"/v1/journey-contacts/{a.busy}/messages",
        f"/v1/journeys/{a.journey.journey_id}/executions.csv",
        f"/v1/journeys/{a.journey.journey_id}/messages.jsonl",
        f"/v1/journeys/{a.journey.journey_id}/stats",
    ]


def test_another_tenants_ids_are_indistinguishable_from_unknown_ones(
    client: TestClient, world: World
) -> None:
    for path in endpoints(world):
        mine = client.get(path, headers=bearer(KEY_A))
        assert mine.status_code == 200, (path, mine.text)
        theirs = client.get(path, headers=bearer(KEY_B))
        unknown_path = path.replace(str(world.a.journey.journey_id), str(uuid.uuid4())).replace(
            str(world.a.busy), str(uuid.uuid4())
        )
        unknown = client.get(unknown_path, headers=bearer(KEY_B))
        assert theirs.status_code == unknown.status_code == 404, (path, theirs.text)
        assert theirs.headers["content-type"] == unknown.headers["content-type"] == PROBLEM
        strip = lambda body: {k: v for k, v in body.items() if k not in ("instance", "request_id")}  # noqa: E731
        assert strip(theirs.json()) == strip(unknown.json())
        assert theirs.json()["status"] == 404 and theirs.json()["title"] == "Not Found"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-key-0123456789",
        f"Basic {KEY_A}",
        f"Bearer {KEY_A}x",
        f"Bearer sha256:{'0' * 64}",
    ],
)
def test_a_missing_or_wrong_key_is_401(
    client: TestClient, world: World, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in ["/v1/journeys", *endpoints(world)]:
        response = client.get(path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"].startswith("Bearer")
        body = response.json()
        assert body["status"] == 401 and body["title"] == "Unauthorized"
        assert KEY_A not in response.text


def test_a_digest_configured_key_authenticates_and_the_digest_itself_does_not(
    client: TestClient, world: World
) -> None:
    import hashlib

    assert client.get("/v1/journeys", headers=bearer(KEY_B)).status_code == 200
    digest = hashlib.sha256(KEY_B.encode()).hexdigest()
    assert client.get("/v1/journeys", headers=bearer(digest)).status_code == 401
    assert client.get("/v1/journeys", headers=bearer(f"sha256:{digest}")).status_code == 401


# -- cursors, limits, parameters ----------------------------------------------------------------


def first_cursor(client: TestClient, path: str, key: str = KEY_A, **params: Any) -> str:
    body = client.get(path, params={"limit": 2, **params}, headers=bearer(key)).json()
    assert body["next_cursor"]
    return body["next_cursor"]


def test_tampered_cursors_are_400(client: TestClient, world: World) -> None:
    journey = world.a.journey.journey_id
    contacts = f"/v1/journeys/{journey}/contacts"
    cursor = first_cursor(client, contacts)
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    foreign = first_cursor(client, "/v1/journeys")
    filtered = first_cursor(client, contacts, status="ACTIVE")
    b_cursor = first_cursor(client, f"/v1/journeys/{world.b.journey.journey_id}/contacts", KEY_B)
    for bad in [
        flipped,
        cursor[:-3],
        cursor + "AA",
        "not a cursor!",
        "",
        "x" * 600,
        foreign,
        filtered,
        b_cursor,
    ]:
        response = client.get(contacts, params={"cursor": bad}, headers=bearer(KEY_A))
        if bad == "":
            assert response.status_code == 200  # an empty cursor is no cursor
            continue
        assert response.status_code in (400, 422), (bad, response.text)
        assert response.headers["content-type"] == PROBLEM
        if len(bad) <= 512:
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["type"] == "urn:journey-worker:problem:invalid-cursor"
    # The untouched cursor still works, and continues where the first page ended.
    assert client.get(contacts, params={"cursor": cursor}, headers=bearer(KEY_A)).status_code == 200


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "100000", "abc", "1.5"])
def test_limits_out_of_range_are_422_problems(client: TestClient, world: World, limit: str) -> None:
    for path in ["/v1/journeys", *endpoints(world)[:3]]:
        response = client.get(path, params={"limit": limit}, headers=bearer(KEY_A))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM
        body = response.json()
        assert body["type"] == "urn:journey-worker:problem:invalid-parameters"
        assert [e["name"] for e in body["errors"]] == ["limit"]


def test_limit_bounds_and_default(client: TestClient, world: World) -> None:
    journey = world.a.journey.journey_id
    page = client.get(f"/v1/journeys/{journey}/contacts", headers=bearer(KEY_A)).json()
    assert len(page["items"]) == 45 and page["next_cursor"] is None  # default 100
    page = client.get(f"/v1/journeys/{journey}/contacts?limit=1000", headers=bearer(KEY_A))
    assert page.status_code == 200


def test_bad_status_and_malformed_ids_are_422(client: TestClient, world: World) -> None:
    journey = world.a.journey.journey_id
    bad_status = client.get(f"/v1/journeys/{journey}/contacts?status=DONE", headers=bearer(KEY_A))
    assert bad_status.status_code == 422 and bad_status.json()["errors"][0]["name"] == "status"
    bad_id = client.get("/v1/journey-contacts/not-a-uuid/executions", headers=bearer(KEY_A))
    assert bad_id.status_code == 422 and bad_id.json()["errors"][0]["name"] == "id"
    assert client.get("/v1/nowhere", headers=bearer(KEY_A)).headers["content-type"] == PROBLEM
    post = client.post("/v1/journeys", headers=bearer(KEY_A))
    assert post.status_code == 405 and post.headers["content-type"] == PROBLEM


# -- errors, request ids, read-only sessions, the OpenAPI document ------------------------------


def test_an_internal_error_is_a_500_problem_without_details(
    settings: Any, read_engine: Engine, world: World, pg_engine: Engine
) -> None:
    from api.app import create_app

    with pg_engine.begin() as conn:
        conn.execute(text("ALTER TABLE journeys RENAME TO journeys_moved"))
    with TestClient(create_app(settings, read_engine), raise_server_exceptions=False) as client:
        response = client.get("/v1/journeys", headers=bearer(KEY_A) | {"X-Request-ID": "r-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["request_id"] == "r-500" and "r-500" in body["detail"]
    assert "journeys" not in body["detail"] and "SELECT" not in response.text


def test_request_id_is_returned_and_in_every_log_line(
    client: TestClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestContextFilter())
    with caplog.at_level(logging.INFO, logger="journey_worker"):
        response = client.get(
            f"/v1/journeys/{uuid.uuid4()}/contacts",
            headers=bearer(KEY_A) | {"X-Request-ID": "req-42"},
        )
    assert response.headers["x-request-id"] == "req-42"
    assert response.json()["request_id"] == "req-42"
    lines = [r for r in caplog.records if r.name.startswith("journey_worker.api")]
    assert lines and all(r.request_id == "req-42" for r in lines)
    assert all(r.tenant_id == str(world.a.tenant_id) for r in lines)
    access = [r for r in lines if getattr(r, "event", None) == "request"]
    assert len(access) == 1 and access[0].status == 404

    generated = client.get("/v1/journeys", headers=bearer(KEY_A) | {"X-Request-ID": "bad\nid"})
    assert len(generated.headers["x-request-id"]) == 32  # replaced by a fresh one
    assert client.get("/v1/journeys", headers=bearer(KEY_A)).headers["x-request-id"]


def test_the_api_sessions_cannot_write(read_engine: Engine, world: World) -> None:
    with read_engine.connect() as conn, pytest.raises((InternalError, ProgrammingError)) as error:
        conn.execute(
            text("UPDATE journeys SET name = 'x' WHERE id = :j"), {"j": world.a.journey.journey_id}
        )
    assert "read-only transaction" in str(error.value)


def test_the_openapi_document_is_served_and_valid(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    paths = document["paths"]
    for path in [
        "/v1/journeys",
        "/v1/journeys/{journey_id}/contacts",
        "/v1/journey-contacts/{id}/executions",
        "/v1/journey-contacts/{id}/messages",
        "/v1/journeys/{journey_id}/executions.csv",
        "/v1/journeys/{journey_id}/stats",
    ]:
        assert "get" in paths[path], path
    contacts = paths["/v1/journeys/{journey_id}/contacts"]["get"]
    names = {p["name"] for p in contacts["parameters"]}
    assert {"journey_id", "status", "limit", "cursor"} <= names
    limit = next(p for p in contacts["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000 and limit["schema"]["default"] == 100
    assert "application/problem+json" in contacts["responses"]["404"]["content"]
    assert (
        "text/csv; charset=utf-8"
        in (paths["/v1/journeys/{journey_id}/executions.csv"]["get"]["responses"]["200"]["content"])
    )
