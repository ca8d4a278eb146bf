"""What a new user meets first: the command line's help texts and the README speak of things a
user has (no "seed": that was the project's brief, not the user's)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from worker.cli import main
from worker.report import render_text

ROOT = Path(__file__).resolve().parent.parent
# "the seed", "the seed's indexes"; not the verb ("seeds a tenant").
SEED = re.compile(r"\bthe seed\b|\bseed's\b", re.IGNORECASE)


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield " ".join((*path, name)), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


@pytest.mark.parametrize(("name", "command"), list(commands(main)), ids=lambda v: str(v))
def test_help_texts_name_things_for_what_they_are(name: str, command: click.Command) -> None:
    with click.Context(command, info_name=name) as ctx:
        text = command.get_help(ctx)
    assert not SEED.search(text), text


def test_the_readme_has_no_seed_for_a_user() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert [line for line in lines if SEED.search(line)] == []


def test_the_monitoring_report_names_its_sections_plainly() -> None:
    from worker.report import SECTIONS

    text = render_text({"generated_at": "now"} | {name: {"unavailable": "-"} for name in SECTIONS})
    assert "the twelve performance indexes" in text
    assert not SEED.search(text)
