"""PostgreSQL's advisory locks, as a test sees them from its own connection: held ones, and
sessions waiting for one (so a test can act at the moment a second worker is blocked)."""

from __future__ import annotations

import time

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool


def advisory_locks(engine: Engine, *, granted: bool | None = None) -> int:
    """Advisory locks in this database: all, held (granted=True) or waited for (False)."""
    sql = (
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
    )
    if granted is not None:
        sql += f" AND l.granted = {'true' if granted else 'false'}"
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def wait_for_lock_waiter(engine: Engine, timeout: float = 20) -> None:
    """Return once some session waits for an advisory lock; fail after `timeout`. Watches on a
    connection of its own, never one of the pool the code under test draws from."""
    watcher = create_engine(engine.url, poolclass=NullPool)
    try:
        deadline = time.monotonic() + timeout
        while advisory_locks(watcher, granted=False) == 0:
            assert time.monotonic() < deadline, f"nobody waited for an advisory lock in {timeout}s"
            time.sleep(0.02)
    finally:
        watcher.dispose()
