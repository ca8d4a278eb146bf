"""The database's clock, in SQL that PostgreSQL and SQLite both understand.

Waits and due times compare database time, never a worker's clock (hard case 9).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Float, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class db_now(FunctionElement[datetime]):
    """now() of the database."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(db_now, "postgresql")
def _db_now_pg(element: db_now, compiler: Any, **kw: Any) -> str:
    return "now()"


@compiles(db_now)
def _db_now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


class seconds_from_now(FunctionElement[datetime]):
    """The database clock plus `seconds` (negative: in the past).

    The seconds are a bound parameter, so SQLAlchemy's compiled-statement cache keys on the
    statement's shape and each call binds its own value (a literal kept outside the cache key
    would let the first call's interval leak into later statements of the same shape).
    """

    type = DateTime(timezone=True)
    inherit_cache = True

    def __init__(self, seconds: float) -> None:
        super().__init__(bindparam(None, float(seconds), type_=Float()))


@compiles(seconds_from_now, "postgresql")
def _seconds_from_now_pg(element: seconds_from_now, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(), not now(): a deadline counts from this moment, not from when a long
    # transaction began.
    seconds = compiler.process(element.clauses, **kw)
    return f"(clock_timestamp() + make_interval(secs => {seconds}))"


@compiles(seconds_from_now)
def _seconds_from_now_sqlite(element: seconds_from_now, compiler: Any, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.6f seconds', {seconds}))"


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything the worker stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def to_utc(value: datetime) -> datetime:
    """An aware datetime as UTC (SQLite stores the wall clock of whatever offset it is given)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: time zones are explicit")
    return value.astimezone(UTC)
