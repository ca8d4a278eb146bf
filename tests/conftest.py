"""The test rig: every database test gets its own PostgreSQL database, cloned from a template
that the real Alembic migrations built once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from db import engine as db_engine
from db.settings import DbSettings, parse_database_url
from tests.e2e_rig import (  # noqa: F401 - fixtures of the end-to-end rig
    broker_url,
    producer,
    rabbitmq_broker_url,
    redis_broker_url,
    rig,
)
from tests.services import PG_ADMIN_URL, REDIS_URL, require, unique_name

# Nothing a developer exported may leak into the tests: each test sets what it needs.
for _name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
    os.environ.pop(_name, None)


def _admin_engine() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_size=1)


def create_database(name: str, template: str | None = None) -> str:
    admin = _admin_engine()
    with admin.connect() as conn:
        clause = f" TEMPLATE {template}" if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated to head by Alembic, used as the template of every test database."""
    require("PostgreSQL")
    from db.migrate import upgrade

    name = unique_name("jw_template")
    url = create_database(name)
    engine = create_engine(url)
    upgrade(engine, "head")
    engine.dispose()
    yield name
    drop_database(name)


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database that only this test uses."""
    name = unique_name("jw_test")
    url = create_database(name, template=pg_template)
    yield url
    db_engine.use_engine(None)
    drop_database(name)


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database with no schema at all (migration tests)."""
    require("PostgreSQL")
    name = unique_name("jw_empty")
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """The process engine, pointed at this test's database, built exactly as production builds it."""
    engine = db_engine.build_engine(DbSettings(url=parse_database_url(pg_url), pool_size=2))
    db_engine.use_engine(engine)
    yield engine
    db_engine.use_engine(None)
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head by Alembic, copied for every SQLite test."""
    from db.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "journey.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine, "head")
    engine.dispose()
    return path


@pytest.fixture
def sqlite_engine(sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    """The process engine on a fresh migrated SQLite file, built as the embedded default is."""
    path = tmp_path / "journey.db"
    shutil.copy(sqlite_template, path)
    engine = db_engine.build_engine(DbSettings(url=parse_database_url(f"sqlite:///{path}")))
    db_engine.use_engine(engine)
    yield engine
    db_engine.use_engine(None)
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def store_engine(request: pytest.FixtureRequest) -> Engine:
    """The process engine on each step store in turn: the engine's suite runs on both, so the
    embedded default can never silently differ from production."""
    name = "pg_engine" if request.param == "postgresql" else "sqlite_engine"
    return request.getfixturevalue(name)


@pytest.fixture
def redis_url() -> str:
    require("Redis")
    return REDIS_URL


@pytest.fixture
def cache_prefix() -> str:
    """A key prefix no other test uses, so tests share one Redis without flushing it."""
    return unique_name("jwtest")
