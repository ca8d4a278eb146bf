"""Fixtures of the API tests: two tenants with keys, a seeded world, the app in-process.

The world is written the way upstream and the worker write it (plain inserts through the models'
tables), with many rows sharing one created_at, so that every walk also proves the id tie-break.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from api.app import api_engine, create_app
from api.settings import ApiSettings
from db.models import Contact, Journey, JourneyContact, JourneyNodeExecution, Message
from db.settings import DbSettings, parse_database_url
from tests.factories import JourneyFixture, make_journey, make_tenant

KEY_A = "tenant-a-key-0123456789abcdef"
KEY_B = "tenant-b-key-fedcba9876543210"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# Every text a CSV or a JSON line could trip over.
TRICKY_BODY = 'Hi "Ann", it\'s 50% off,\nreply STOP\\quit\r\n\x01\ttab é 🎉'
CONTACT_STATUSES = ("ACTIVE", "WAITING", "COMPLETED", "FAILED", "EXITED")


def journey_nodes() -> list[tuple[str, str, dict[str, object], str | None]]:
    return [
        ("send", "send_sms", {"body": "Hi"}, "wait"),
        ("wait", "wait", {"seconds": 60}, "cond"),
        (
            "cond",
            "condition",
            {
                "field": "plan",
                "op": "eq",
                "value": "pro",
                "true_node_id": "@send2",
                "false_node_id": "@bye",
            },
            None,
        ),
        ("send2", "send_sms", {"body": "Again"}, "bye"),
        ("bye", "exit", {}, None),
    ]


@dataclass
class TenantWorld:
    tenant_id: uuid.UUID
    key: str
    journey: JourneyFixture
    journeys: list[uuid.UUID] = field(default_factory=list)
    journey_contacts: list[uuid.UUID] = field(default_factory=list)
    # The journey contact with a long history, and its executions and messages.
    busy: uuid.UUID | None = None
    executions: list[uuid.UUID] = field(default_factory=list)
    messages: list[uuid.UUID] = field(default_factory=list)


@dataclass
class World:
    a: TenantWorld
    b: TenantWorld


def add_journey_contacts(
    engine: Engine, tenant: TenantWorld, count: int, *, start: datetime, same_second: int = 5
) -> list[uuid.UUID]:
    """`count` contacts and their journey contacts; every `same_second` share one created_at."""
    contact_ids = [uuid.uuid4() for _ in range(count)]
    jc_ids = [uuid.uuid4() for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            insert(Contact),
            [
                {
                    "id": c,
                    "tenant_id": tenant.tenant_id,
                    "phone": f"+1555{i:07d}",
                    "attributes": {"plan": "pro"},
                }
                for i, c in enumerate(contact_ids)
            ],
        )
        conn.execute(
            insert(JourneyContact),
            [
                {
                    "id": jc,
                    "tenant_id": tenant.tenant_id,
                    "journey_id": tenant.journey.journey_id,
                    "contact_id": contact_ids[i],
                    "status": CONTACT_STATUSES[i % len(CONTACT_STATUSES)],
                    "current_node_id": tenant.journey.nodes["send"],
                    "created_at": start + timedelta(seconds=i // same_second),
                    "updated_at": start,
                }
                for i, jc in enumerate(jc_ids)
            ],
        )
    tenant.journey_contacts.extend(jc_ids)
    return jc_ids


def add_history(engine: Engine, tenant: TenantWorld, jc: uuid.UUID, steps: int) -> None:
    """`steps` executions (every 4 share one created_at), a message for each send."""
    nodes = tenant.journey.nodes
    cycle = ["send", "wait", "cond", "send2"]
    with engine.connect() as conn:
        contact_id = (
            conn.execute(JourneyContact.__table__.select().where(JourneyContact.id == jc))
            .one()
            .contact_id
        )
    executions, messages = [], []
    for step in range(steps):
        execution_id = uuid.uuid4()
        name = cycle[step % len(cycle)]
        at = T0 + timedelta(minutes=step // 4)
        executions.append(
            {
                "id": execution_id,
                "tenant_id": tenant.tenant_id,
                "journey_contact_id": jc,
                "node_id": nodes[name],
                "status": "FAILED" if step % 7 == 6 else "COMPLETED",
                "executed_at": at,
                "step_seq": step,
                "created_at": at,
                "updated_at": at,
                "result": {"step": step},
            }
        )
        if name.startswith("send"):
            message_id = uuid.uuid4()
            messages.append(
                {
                    "id": message_id,
                    "tenant_id": tenant.tenant_id,
                    "contact_id": contact_id,
                    "journey_node_execution_id": execution_id,
                    "direction": "OUTBOUND",
                    "body": TRICKY_BODY if step == 0 else f"message {step}",
                    "status": ("SENT", "QUEUED", "FAILED")[step % 3],
                    "created_at": at,
                    "updated_at": at,
                }
            )
            tenant.messages.append(message_id)
        tenant.executions.append(execution_id)
    with engine.begin() as conn:
        conn.execute(insert(JourneyNodeExecution), executions)
        if messages:
            conn.execute(insert(Message), messages)
    tenant.busy = jc


def add_journeys(engine: Engine, tenant: TenantWorld, count: int) -> None:
    ids = [uuid.uuid4() for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            insert(Journey),
            [
                {
                    "id": j,
                    "tenant_id": tenant.tenant_id,
                    "name": f"extra {i}",
                    "status": "DRAFT",
                    "created_at": T0 + timedelta(seconds=i // 3),
                    "updated_at": T0,
                }
                for i, j in enumerate(ids)
            ],
        )
    tenant.journeys.extend(ids)


def make_tenant_world(engine: Engine, key: str, name: str) -> TenantWorld:
    tenant_id = make_tenant(engine, name=name)
    journey = make_journey(engine, tenant_id, journey_nodes())
    return TenantWorld(tenant_id, key, journey, journeys=[journey.journey_id])


@pytest.fixture
def world(pg_engine: Engine) -> World:
    a = make_tenant_world(pg_engine, KEY_A, "Acme")
    b = make_tenant_world(pg_engine, KEY_B, "Beta")
    add_journeys(pg_engine, a, 11)
    add_journeys(pg_engine, b, 2)
    add_journey_contacts(pg_engine, a, 45, start=T0)
    add_journey_contacts(pg_engine, b, 6, start=T0)
    add_history(pg_engine, a, a.journey_contacts[0], 23)
    add_history(pg_engine, b, b.journey_contacts[0], 5)
    return World(a, b)


def api_settings(world: World, **extra: str) -> ApiSettings:
    # Tenant B's key is configured by its digest: both forms of API_KEYS are in play.
    digest_b = hashlib.sha256(KEY_B.encode()).hexdigest()
    keys = f"{world.a.tenant_id}:{KEY_A}, {world.b.tenant_id}:sha256:{digest_b}"
    return ApiSettings.from_env({"API_KEYS": keys, **extra})


@pytest.fixture
def settings(world: World) -> ApiSettings:
    return api_settings(world)


@pytest.fixture
def read_engine(pg_url: str, settings: ApiSettings) -> Iterator[Engine]:
    """The API's own engine, as `serve` builds it (its pool, READ ONLY transactions)."""
    engine = api_engine(settings, DbSettings(url=parse_database_url(pg_url)))
    yield engine
    engine.dispose()


@pytest.fixture
def client(settings: ApiSettings, read_engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, read_engine)) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
