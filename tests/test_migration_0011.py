"""Migration 0011 (two-way SMS) up, down and up again, on PostgreSQL and SQLite, with the rows
the old schema cannot hold: an inbound message without a contact, DELIVERED and UNDELIVERED."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError

from db.migrate import current_revision, downgrade, upgrade

TABLES = ("contact_events", "early_delivery_receipts", "contact_consent_changes")


def _url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgresql":
        return request.getfixturevalue("empty_pg_url")
    return f"sqlite:///{tmp_path / 'two_way.db'}"


def _ids(engine: Engine) -> dict[str, str]:
    """Rows as upstream and the worker write them at 0011 (ids as the dialect stores them)."""
    sqlite = engine.dialect.name == "sqlite"
    ids = {
        k: uuid.uuid4().hex if sqlite else str(uuid.uuid4()) for k in ("t", "c", "m1", "m2", "m3")
    }
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name) VALUES (:t, 'x')"), ids)
        conn.execute(
            text("INSERT INTO contacts (id, tenant_id, phone) VALUES (:c, :t, '+442079460000')"),
            ids,
        )
        conn.execute(
            text(
                "INSERT INTO messages (id, tenant_id, contact_id, direction, body, status, "
                "from_phone) VALUES "
                "(:m1, :t, NULL, 'INBOUND', 'hi', 'DELIVERED', '+33142685300'),"
                "(:m2, :t, :c, 'OUTBOUND', 'a', 'DELIVERED', NULL),"
                "(:m3, :t, :c, 'OUTBOUND', 'b', 'UNDELIVERED', NULL)"
            ),
            ids,
        )
        conn.execute(
            text(
                "INSERT INTO contact_events (id, tenant_id, contact_id, name, occurred_at) "
                "VALUES (:m1, :t, :c, 'sms_reply', CURRENT_TIMESTAMP)"
            ),
            ids,
        )
    return ids


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_0011_up_down_up(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = _url(backend, request, tmp_path)
    engine = create_engine(url)
    try:
        upgrade(engine, "0011")
        upgrade(engine, "0011")  # re-runnable: nothing left to do
        ids = _ids(engine)
        downgrade(engine, "0010")
        assert current_revision(engine) == "0010"
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(text("SELECT body, status FROM messages ORDER BY body")).all()
            )
            assert statuses == {"a": "SENT", "b": "FAILED"}  # the inbound one had no contact
            if backend == "postgresql":
                tables = set(
                    conn.execute(
                        text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                    ).scalars()
                )
            else:
                tables = set(
                    conn.execute(
                        text("SELECT name FROM sqlite_master WHERE type = 'table'")
                    ).scalars()
                )
        assert not tables & set(TABLES)
        with pytest.raises(IntegrityError, match=r"(?i)null|constraint"), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO messages (id, tenant_id, contact_id, direction, body) "
                    "VALUES (:m1, :t, NULL, 'INBOUND', 'x')"
                ),
                ids,
            )
        upgrade(engine, "0011")
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE messages SET status = 'DELIVERED', error_code = '0' WHERE body = 'a'")
            )
            assert conn.execute(text("SELECT count(*) FROM contact_events")).scalar_one() == 0
    finally:
        engine.dispose()
