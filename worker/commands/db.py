"""`journey-worker db ...`: migrations and index verification. (Being written.)"""

import click


@click.group()
def db() -> None:
    """Migrate the schema and verify the seed's indexes."""
