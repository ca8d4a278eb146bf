"""The operator's entry point: `journey-worker COMMAND`."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from worker.commands import contacts as contacts_commands
from worker.commands import db as db_commands
from worker.commands import demo as demo_commands
from worker.commands import export as export_commands
from worker.commands import listen as listen_commands
from worker.commands import ops as ops_commands
from worker.commands import serve as serve_commands
from worker.commands import stats as stats_commands


class JourneyWorkerCLI(click.Group):
    """Turns configuration and connection problems into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except Exception as exc:
            message = describe_startup_error(exc)
            if message is None:
                raise
            click.echo(f"journey-worker: {message}", err=True)
            sys.exit(2)


def describe_startup_error(exc: BaseException) -> str | None:
    """One line for errors an operator fixes in the environment, None for real bugs."""
    from sqlalchemy.exc import OperationalError

    variable = getattr(exc, "variable", None)
    if isinstance(exc, ValueError) and variable:
        return str(exc)
    if isinstance(exc, OperationalError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return f"DATABASE_URL: cannot connect: {reason}"
    return None


@click.group(cls=JourneyWorkerCLI)
def main() -> None:
    """journey-worker: executes customer journeys, one Celery task per node."""


main.add_command(db_commands.db)
main.add_command(demo_commands.demo)
main.add_command(listen_commands.listen)
main.add_command(ops_commands.health)
main.add_command(ops_commands.report)
main.add_command(serve_commands.serve)
main.add_command(export_commands.export)
main.add_command(stats_commands.stats)
main.add_command(contacts_commands.contacts)

# Commands of the tools built on the worker (the bench), found by their packaging's entry
# points so the worker never imports them.
COMMAND_ENTRY_POINTS = "journey_worker.commands"
for entry_point in entry_points(group=COMMAND_ENTRY_POINTS):
    main.add_command(entry_point.load(), entry_point.name)


if __name__ == "__main__":
    main()
