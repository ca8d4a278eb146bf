"""Alembic environment, modelled on pypi/warehouse's warehouse/migrations/env.py.

Online mode uses the connection that db.migrate passes in config.attributes["connection"], or
builds one from DATABASE_URL (the `alembic` command line). On PostgreSQL the run holds the
migration advisory lock and migration timeouts (db.migrate.migration_lock); each revision commits
on its own (transaction_per_migration), which 0002's concurrent index builds need anyway.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from db.engine import build_engine
from db.migrate import DEFAULT_LOCK_WAIT_SECONDS, check_revision_known, migration_lock
from db.models import Base
from db.settings import db_settings

config = context.config
target_metadata = Base.metadata

# Only the alembic command line has an ini file with logging; programmatic callers log their way.
if config.config_file_name is not None and config.get_section("loggers") is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations_offline() -> None:
    """Emit SQL for DATABASE_URL's dialect instead of running it (`alembic upgrade --sql`)."""
    context.configure(
        url=db_settings().url,
        target_metadata=target_metadata,
        literal_binds=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = build_engine(db_settings())
    try:
        with engine.connect() as own:
            _run(own)
    finally:
        engine.dispose()


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        wait = float(config.attributes.get("lock_wait_seconds", DEFAULT_LOCK_WAIT_SECONDS))
        with migration_lock(connection, wait):
            _migrate(connection)
    else:
        # SQLite serialises writers itself, and the embedded default has a single deployer.
        _migrate(connection)
        if connection.in_transaction():
            connection.commit()


def _migrate(connection: Connection) -> None:
    # Checked under the lock: a newer deploy may have migrated while this one waited.
    check_revision_known(connection, ScriptDirectory.from_config(config))
    # Alembic treats a connection already in a transaction as the caller's and would never
    # commit it; autocommit blocks (CREATE INDEX CONCURRENTLY) need it to own the transactions.
    connection.commit()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=True,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
