"""0012 (contact_sends, the frequency cap's counted sends): up, down, up again, and a rerun over
a half-applied upgrade, on PostgreSQL and SQLite, with the rows of other tables kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from db.engine import build_engine
from db.migrate import current_revision, downgrade, make_config, upgrade
from db.settings import DbSettings, parse_database_url


@pytest.fixture(params=["postgresql", "sqlite"])
def migration_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        url = request.getfixturevalue("empty_pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'journey.db'}"
    engine = build_engine(DbSettings(url=parse_database_url(url), pool_size=1, max_overflow=0))
    yield engine
    engine.dispose()


def contact_sends_indexes(engine: Engine) -> set[str]:
    inspector = inspect(engine)
    if not inspector.has_table("contact_sends"):
        return set()
    return {i["name"] for i in inspector.get_indexes("contact_sends")}


def revision_before(revision: str) -> str:
    script = ScriptDirectory.from_config(make_config()).get_revision(revision)
    assert script is not None and isinstance(script.down_revision, str)
    return script.down_revision


def test_0012_up_down_up_and_rerun(migration_engine: Engine) -> None:
    before = revision_before("0012")
    engine = migration_engine
    upgrade(engine, "0012")
    assert current_revision(engine) == "0012"
    assert contact_sends_indexes(engine) == {
        "ix_contact_sends_contact_sent_at",
        "ix_contact_sends_sent_at",
    }
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, status, settings, created_at, updated_at) "
                "VALUES ('00000000000000000000000000000001', 'A', 'ACTIVE', '{}', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                if engine.dialect.name == "sqlite"
                else "INSERT INTO tenants (id, name, status, settings) "
                "VALUES ('00000000-0000-0000-0000-000000000001', 'A', 'ACTIVE', '{}')"
            )
        )

    downgrade(engine, before)
    assert current_revision(engine) == before
    assert not inspect(engine).has_table("contact_sends")
    assert not inspect(engine).has_table("journey_node_redirects")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tenants")).scalar_one() == 1

    upgrade(engine, "0012")
    assert contact_sends_indexes(engine) == {
        "ix_contact_sends_contact_sent_at",
        "ix_contact_sends_sent_at",
    }
    assert inspect(engine).has_table("journey_node_redirects")

    # A rerun after a failure between the table and its index resumes where it stopped.
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_contact_sends_contact_sent_at"))
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": before})
    upgrade(engine, "0012")
    assert contact_sends_indexes(engine) == {
        "ix_contact_sends_contact_sent_at",
        "ix_contact_sends_sent_at",
    }
