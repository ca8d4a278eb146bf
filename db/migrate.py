"""Schema migrations, run from code: the CLI, the tests and any deploy step call these functions.

Alembic does the work (migrations/); this module builds its Config programmatically, so it runs
from any working directory, and hands it the caller's connection. On PostgreSQL every run holds a
session-level advisory lock (MIGRATION_LOCK_KEY), so two deploys never migrate at once, and
refuses to touch a database whose revision this code does not know (newer code migrated it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from db.indexes import PERFORMANCE_INDEXES, IndexSpec

log = logging.getLogger(__name__)

# The NOTIFY channel of migration 0003's triggers: the payload is JSON with kind ("tenant" or
# "journey"), tenant_id and journey_id (null for a tenant).
INVALIDATION_CHANNEL = "journey_worker_invalidate"

# The advisory lock every migration run holds; advisory locks are per database, so this only
# serialises runs against the same database. The bytes spell "jwmigrat".
MIGRATION_LOCK_KEY = 0x6A776D6967726174

# How long a run waits for another run's lock before giving up. A second deploy that starts while
# the first migrates waits for it, then finds the database at head and does nothing.
DEFAULT_LOCK_WAIT_SECONDS = 60.0

# Session settings while migrating (as pypi/warehouse does): a DDL statement that cannot get its
# table lock within 4 s fails instead of queueing every query of the live workers behind it.
MIGRATION_STATEMENT_TIMEOUT = "5min"
MIGRATION_LOCK_TIMEOUT = "4s"

# Concurrent index builds take a lock that blocks neither reads nor writes, so waiting is
# harmless; a build on a large table legitimately outlasts any statement timeout. A wait longer
# than this means a stuck transaction: the build fails, leaves an INVALID index, and the next
# run of the same code drops and rebuilds it.
INDEX_BUILD_STATEMENT_TIMEOUT = "0"
INDEX_BUILD_LOCK_TIMEOUT = "5min"

Bind = Engine | Connection | str


class MigrationError(RuntimeError):
    """The schema cannot be migrated as asked; the message says why and what to do."""


def script_location() -> Path:
    """The installed `migrations` package: found by import, so any working directory works."""
    import migrations

    return Path(migrations.__file__).resolve().parent


def make_config(
    connection: Connection | None = None,
    *,
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
) -> Config:
    """An Alembic Config for migrations/; env.py reads the connection from its attributes."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if connection is not None:
        config.attributes["connection"] = connection
    config.attributes["lock_wait_seconds"] = lock_wait_seconds
    return config


def upgrade(
    bind: Bind, revision: str = "head", *, lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS
) -> None:
    """Migrate up to `revision` (default: the newest this code knows)."""
    with _connect(bind) as connection:
        _run(
            command.upgrade, make_config(connection, lock_wait_seconds=lock_wait_seconds), revision
        )


def downgrade(
    bind: Bind, revision: str, *, lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS
) -> None:
    """Migrate down to `revision` ("base" removes everything)."""
    with _connect(bind) as connection:
        config = make_config(connection, lock_wait_seconds=lock_wait_seconds)
        _run(command.downgrade, config, revision)


def current_revision(bind: Bind) -> str | None:
    """The revision stored in the database, None for a database never migrated."""
    with _connect(bind) as connection:
        try:
            return MigrationContext.configure(connection).get_current_revision()
        finally:
            # Reading autobegan a transaction; end it so a caller's connection is left as it was.
            connection.rollback()


def head_revision() -> str:
    head = ScriptDirectory.from_config(make_config()).get_current_head()
    assert head is not None, "migrations/versions holds no revision"
    return head


def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(make_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def is_at_head(bind: Bind) -> bool:
    """True if the database is exactly at this code's head (False when behind or ahead)."""
    return current_revision(bind) == head_revision()


def unknown_revision_error(revision: str) -> MigrationError:
    return MigrationError(
        f"database is at revision {revision}, which this code does not know: it is newer than "
        "this code; deploy the newer code or downgrade with it"
    )


def check_revision_known(connection: Connection, script: ScriptDirectory) -> None:
    """Refuse a database migrated by newer code: Alembic would fail on it half-way otherwise."""
    heads = MigrationContext.configure(connection).get_current_heads()
    known = {rev.revision for rev in script.walk_revisions()}
    for head in heads:
        if head not in known:
            raise unknown_revision_error(head)


@contextmanager
def session_settings(connection: Connection, **settings: str) -> Iterator[None]:
    """Set PostgreSQL session parameters for the block, then restore what was there before.

    Restoring (rather than RESET) keeps values that the engine applied at checkout. The caller
    owns transaction handling: outside autocommit, a rollback would undo the SET itself.
    """
    before = _get(connection, *settings)
    _set(connection, **settings)
    try:
        yield
    finally:
        _set(connection, **before)


@contextmanager
def migration_lock(connection: Connection, wait_seconds: float) -> Iterator[None]:
    """Hold the migration advisory lock (session level) for the block, with migration timeouts.

    The wait for the lock is bounded by lock_timeout, which PostgreSQL applies to advisory locks
    too: no polling, and the waiter gets the lock the moment the holder releases it. Because a
    session lock outlives transactions, the block may commit freely; if the unlock itself fails,
    the connection is invalidated so a pool never hands out a connection still holding the lock.
    """
    if connection.in_transaction():
        raise MigrationError(
            "pass a connection with no open transaction: migrations commit one revision at a time"
        )
    before = _get(connection, "statement_timeout", "lock_timeout")
    _acquire(connection, wait_seconds)
    try:
        _set(
            connection,
            statement_timeout=MIGRATION_STATEMENT_TIMEOUT,
            lock_timeout=MIGRATION_LOCK_TIMEOUT,
        )
        connection.commit()
        yield
        if connection.in_transaction():
            connection.commit()
    finally:
        try:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(
                text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY}
            ).scalar_one()
            _set(connection, **before)
            connection.commit()
        except DBAPIError:
            log.exception("could not release the migration lock; discarding the connection")
            connection.invalidate()


def _acquire(connection: Connection, wait_seconds: float) -> None:
    started = time.monotonic()
    try:
        if wait_seconds <= 0:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY}
            ).scalar_one()
        else:
            # Only lock_timeout bounds the wait: the engine's statement_timeout must not cut it.
            _set(
                connection,
                statement_timeout="0",
                lock_timeout=f"{max(1, round(wait_seconds * 1000))}ms",
            )
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            got = True
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        got = False
    if got:
        return
    connection.rollback()  # also undoes the SETs above
    holder = _lock_holder(connection)
    connection.rollback()
    raise MigrationError(
        f"another migration is running ({holder}); gave up after "
        f"{time.monotonic() - started:.1f}s waiting for its lock; retry when it has finished"
    )


def _lock_holder(connection: Connection) -> str:
    # A bigint advisory key shows in pg_locks split into classid (high half) and objid (low).
    row = connection.execute(
        text(
            "SELECT l.pid, a.application_name FROM pg_locks l "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
        ),
        {"hi": MIGRATION_LOCK_KEY >> 32, "lo": MIGRATION_LOCK_KEY & 0xFFFFFFFF},
    ).first()
    if row is None:
        return "lock holder already gone"
    return f"lock held by pid {row.pid}, application {row.application_name or '?'!s}"


def _get(connection: Connection, *names: str) -> dict[str, str]:
    return {
        name: connection.execute(text("SELECT current_setting(:n)"), {"n": name}).scalar_one()
        for name in names
    }


def _set(connection: Connection, **settings: str) -> None:
    for name, value in settings.items():
        connection.execute(text("SELECT set_config(:n, :v, false)"), {"n": name, "v": value})


def build_performance_indexes(
    connection: Connection, specs: tuple[IndexSpec, ...] = PERFORMANCE_INDEXES
) -> None:
    """Create the missing performance indexes; on PostgreSQL concurrently, repairing leftovers.

    On PostgreSQL the connection must be in autocommit mode (CREATE INDEX CONCURRENTLY refuses a
    transaction block). An index of the same name left INVALID by a failed concurrent build would
    satisfy IF NOT EXISTS forever, so it is dropped (concurrently) and built again.
    """
    if connection.dialect.name != "postgresql":
        for spec in specs:
            connection.execute(text(spec.create_sql(concurrently=False)))
        return
    with session_settings(
        connection,
        statement_timeout=INDEX_BUILD_STATEMENT_TIMEOUT,
        lock_timeout=INDEX_BUILD_LOCK_TIMEOUT,
    ):
        for spec in specs:
            if index_is_invalid(connection, spec.name):
                log.warning("dropping INVALID index %s left by a failed build", spec.name)
                connection.execute(text(spec.drop_sql(concurrently=True)))
            log.info("index %s: create if missing", spec.name)
            connection.execute(text(spec.create_sql(concurrently=True)))


def drop_performance_indexes(
    connection: Connection, specs: tuple[IndexSpec, ...] = PERFORMANCE_INDEXES
) -> None:
    """The rollback plan: drop exactly these indexes (concurrently on PostgreSQL)."""
    concurrently = connection.dialect.name == "postgresql"
    if not concurrently:
        for spec in specs:
            connection.execute(text(spec.drop_sql(concurrently=False)))
        return
    with session_settings(
        connection,
        statement_timeout=INDEX_BUILD_STATEMENT_TIMEOUT,
        lock_timeout=INDEX_BUILD_LOCK_TIMEOUT,
    ):
        for spec in specs:
            connection.execute(text(spec.drop_sql(concurrently=True)))


def index_is_invalid(connection: Connection, name: str) -> bool:
    """True if an index of this name exists in the current schema and is not valid."""
    invalid = connection.execute(
        text(
            "SELECT NOT (i.indisvalid AND i.indisready) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = :name AND n.nspname = current_schema()"
        ),
        {"name": name},
    ).scalar()
    return bool(invalid)


@contextmanager
def _connect(bind: Bind) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
        return
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            yield connection
        return
    # A URL: build the engine exactly as the worker does (SQLite pragmas, psycopg 3 driver).
    from db.engine import build_engine
    from db.settings import DbSettings

    engine = build_engine(DbSettings(url=bind))
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _run(operation: Callable[[Config, str], None], config: Config, revision: str) -> None:
    try:
        operation(config, revision)
    except CommandError as exc:
        # Alembic's own errors (an unknown target revision, ...) become one operator line.
        raise MigrationError(str(exc)) from exc
    except DBAPIError as exc:
        # The connection worked (that is checked before), so this is a revision that failed,
        # typically a DDL statement that hit lock_timeout behind live traffic.
        reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
        raise MigrationError(
            f"{operation.__name__} to {revision} failed: {reason}; each revision commits on its "
            "own, so running it again resumes at the revision that failed"
        ) from exc
