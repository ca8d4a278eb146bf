"""One engine per process, built lazily from the process's database settings; safe across fork."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from db.settings import EMBEDDED_DIR, DbSettings, db_settings

SQLITE_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")

_lock = threading.Lock()
_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None


def build_engine(settings: DbSettings) -> Engine:
    """An engine configured from settings; callers normally use get_engine()."""
    if settings.is_sqlite:
        return _build_sqlite_engine(settings)
    options = (
        f"-c statement_timeout={settings.statement_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={settings.idle_in_transaction_timeout_ms}"
        f" -c lock_timeout={settings.lock_timeout_ms}"
    )
    connect_args: dict[str, Any] = {"connect_timeout": 5, "application_name": "journey-worker"}
    if settings.session_settings == "startup":
        connect_args["options"] = options
    if settings.pgbouncer:
        # PgBouncer in transaction mode cannot keep server-side prepared statements.
        connect_args["prepare_threshold"] = None
    engine = create_engine(
        settings.url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        pool_pre_ping=settings.pool_pre_ping,
        connect_args=connect_args,
    )
    if settings.session_settings == "checkout":
        statements = [
            f"SET statement_timeout = {settings.statement_timeout_ms}",
            f"SET idle_in_transaction_session_timeout = {settings.idle_in_transaction_timeout_ms}",
            f"SET lock_timeout = {settings.lock_timeout_ms}",
        ]

        @event.listens_for(engine, "connect")
        def _apply_session_settings(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
            dbapi_conn.commit()

    return engine


def _build_sqlite_engine(settings: DbSettings) -> Engine:
    database = settings.url.database
    in_memory = database in (None, "", ":memory:")
    if not in_memory and settings.url.database.startswith(str(EMBEDDED_DIR)):
        EMBEDDED_DIR.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        settings.url,
        connect_args={"check_same_thread": False, "timeout": 30},
        poolclass=StaticPool if in_memory else None,
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would BEGIN (DEFERRED) on its own; turn it off
        # and let the "begin" hook below say how each transaction starts.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        if not in_memory:
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Any) -> None:
        # execution_options(sqlite_begin="IMMEDIATE") takes the write lock before the first
        # read: a step reads and writes with no other writer in between (db/step_store.py).
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # each statement commits by itself
        mode = options.get("sqlite_begin", "DEFERRED")
        if mode not in SQLITE_BEGIN_MODES:
            raise ValueError(f"sqlite_begin must be one of {SQLITE_BEGIN_MODES}, got {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def get_engine() -> Engine:
    global _engine, _sessions
    if _engine is None:
        with _lock:
            if _engine is None:
                _engine = build_engine(db_settings())
                _sessions = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def use_engine(engine: Engine | None) -> None:
    """Install an engine for this process (tests, the demo); None forgets the current one, and
    the next get_engine() builds one from db_settings()."""
    global _engine, _sessions
    with _lock:
        _engine = engine
        _sessions = sessionmaker(engine, expire_on_commit=False) if engine is not None else None


def dispose_after_fork() -> None:
    """In a forked child: drop the parent's pooled connections without closing them.

    Closing would send a terminate message on sockets the parent still uses; close=False
    just forgets them, as the SQLAlchemy pooling docs recommend for multiprocessing.
    """
    if _engine is not None:
        _engine.dispose(close=False)


@contextmanager
def autocommit_connection() -> Iterator[Connection]:
    """A connection on which every statement is its own transaction (both databases)."""
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield connection


@contextmanager
def transaction() -> Iterator[Session]:
    """One session and one transaction: commit on success, roll back on any error."""
    get_engine()
    assert _sessions is not None
    with _sessions() as session, session.begin():
        yield session
