"""One message's delivery: a connection on which this process alone delivers that message.

PostgreSQL: one autocommit connection holding a session advisory lock on the message for the
whole block, so every statement commits at once while no other worker can deliver the same
message. That is what lets the provider a message is handed to be on record BEFORE the call
(a worker killed mid-call leaves the record behind), without a row lock that a commit would
release. A killed process's lock goes with its connection; waiting for the lock is bounded by
the connection's lock_timeout (a retryable OperationalError).

SQLite (the embedded default, one writer at a time): one transaction, as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from db.engine import get_engine, transaction

LOCK_SQL = text("SELECT pg_advisory_lock(hashtextextended(:key, 0))")
UNLOCK_SQL = text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))")


@contextmanager
def message_session(message_id: uuid.UUID) -> Iterator[Session | Connection]:
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        with transaction() as session:
            yield session
        return
    # Its own key space: a journey contact's lock (db/step_store.py) hashes the bare id.
    key = {"key": f"message:{message_id}"}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(LOCK_SQL, key)
        try:
            yield connection
        finally:
            try:
                connection.execute(UNLOCK_SQL, key)
            except Exception:
                # A connection that cannot unlock is closed instead, which releases the lock;
                # it must never go back to the pool still holding it.
                connection.invalidate()
