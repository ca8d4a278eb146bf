"""What differs between PostgreSQL and SQLite beyond what SQLAlchemy hides."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect_insert(bind: Session | Connection) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    connection = bind if isinstance(bind, Connection) else bind.get_bind()
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


def is_postgresql(bind: Session | Connection) -> bool:
    connection = bind if isinstance(bind, Connection) else bind.get_bind()
    return connection.dialect.name == "postgresql"
