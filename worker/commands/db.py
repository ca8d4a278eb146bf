"""`journey-worker db ...`: migrate the schema, show its revision, verify the indexes.

Every command uses the process engine (DATABASE_URL, or the embedded SQLite default). A
MigrationError (database newer than this code, another migration holding the lock, an unknown
revision) is one line on stderr and exit code 2, like the CLI's configuration errors.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from db import migrate
from db.engine import get_engine

P = ParamSpec("P")
R = TypeVar("R")

lock_wait_option = click.option(
    "--lock-wait",
    type=float,
    default=migrate.DEFAULT_LOCK_WAIT_SECONDS,
    show_default=True,
    help="Seconds to wait for another migration's lock before giving up (PostgreSQL).",
)


def _one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except migrate.MigrationError as exc:
            click.echo(f"journey-worker: {exc}", err=True)
            sys.exit(2)

    return wrapper


class _EchoHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _progress_only(record: logging.LogRecord) -> bool:
    # Alembic's "Running upgrade 0001 -> 0002, ..." lines, and our warnings; not its chatter.
    return record.levelno >= logging.WARNING or record.getMessage().startswith("Running ")


def _show_progress() -> None:
    for name in ("alembic.runtime.migration", "db.migrate"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
            handler = _EchoHandler()
            handler.addFilter(_progress_only)
            logger.addHandler(handler)


@click.group()
def db() -> None:
    """Migrate the schema and verify the twelve performance indexes."""


@db.command()
@click.argument("revision", default="head")
@lock_wait_option
@_one_line_errors
def upgrade(revision: str, lock_wait: float) -> None:
    """Migrate up to REVISION (default: head). Safe to run from several deploys at once."""
    _show_progress()
    engine = get_engine()
    migrate.upgrade(engine, revision, lock_wait_seconds=lock_wait)
    click.echo(f"database at revision {migrate.current_revision(engine)}")


@db.command()
@click.argument("revision")
@lock_wait_option
@_one_line_errors
def downgrade(revision: str, lock_wait: float) -> None:
    """Migrate down to REVISION (0001 drops the performance indexes; base drops everything)."""
    _show_progress()
    engine = get_engine()
    migrate.downgrade(engine, revision, lock_wait_seconds=lock_wait)
    click.echo(f"database at revision {migrate.current_revision(engine)}")


@db.command()
@_one_line_errors
def current() -> None:
    """Print the database's revision and whether it is this code's head."""
    revision = migrate.current_revision(get_engine())
    head = migrate.head_revision()
    if revision is None:
        click.echo(f"none (empty database; head is {head}: run `journey-worker db upgrade`)")
    elif revision == head:
        click.echo(f"{revision} (head)")
    elif revision in migrate.known_revisions():
        click.echo(f"{revision} (behind head {head}: run `journey-worker db upgrade`)")
    else:
        raise migrate.unknown_revision_error(revision)


@db.command("verify-indexes")
@click.option(
    "--repair",
    is_flag=True,
    help="Rebuild missing, invalid and differing indexes (concurrently), then verify.",
)
@_one_line_errors
def verify_indexes(repair: bool) -> None:
    """Check the twelve performance indexes: present, valid, defined as db/indexes.py says.

    Exits 1 if any is not, naming each; 0 otherwise.
    """
    from db.verify import inspect_indexes, repair_indexes

    engine = get_engine()
    if migrate.current_revision(engine) is None:
        # No tables to index: --repair would fail on them, and upgrade builds the indexes too.
        raise migrate.MigrationError(
            "empty database (never migrated): run `journey-worker db upgrade`, which builds the "
            f"indexes too (head is {migrate.head_revision()})"
        )
    if repair:
        _show_progress()
        repair_indexes(engine)
    statuses = inspect_indexes(engine)
    width = max(len(status.name) for status in statuses)
    for status in statuses:
        click.echo(status.line(width))
    problems = [status for status in statuses if not status.ok]
    if problems:
        listed = ", ".join(f"{p.name} ({p.state.value})" for p in problems)
        click.echo(
            f"journey-worker: {len(problems)} of {len(statuses)} indexes need attention: {listed}; "
            "`journey-worker db verify-indexes --repair` rebuilds them",
            err=True,
        )
        sys.exit(1)
