"""What a new user meets first: the command line's help texts and the README speak of things a
user has (no "seed": that was the project's brief, not the user's); the Procfile starts what a
plain install has and keeps running, Procfile.all adds the API and Flower."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from tasks import names
from tests.e2e_rig import worker_env
from tests.net_faults import free_port, wait_for_port
from tests.services import unique_name
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


# --- the Procfiles ----------------------------------------------------------------------------

BIN = Path(sys.executable).parent
PROCFILES = {
    "Procfile": ("worker", "beat", "listen"),
    "Procfile.all": ("worker", "beat", "listen", "api", "flower"),
}


def procfile(name: str) -> dict[str, list[str]]:
    processes = {}
    for line in (ROOT / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            process, _, command = line.partition(":")
            processes[process.strip()] = shlex.split(command)
    return processes


@pytest.mark.parametrize("name", sorted(PROCFILES))
def test_every_procfile_command_exists(name: str) -> None:
    processes = procfile(name)
    assert tuple(processes) == PROCFILES[name]
    for process, argv in processes.items():
        assert (BIN / argv[0]).exists(), f"{name} {process}: no {argv[0]} in {BIN}"
        if argv[0] == "journey-worker":
            assert argv[1] in main.commands, f"{name} {process}: no command {argv[1]!r}"
        else:
            assert argv[:3] == ["celery", "-A", "worker"], argv
            assert importlib.util.find_spec("worker") is not None
            if argv[3] == "flower":
                assert importlib.util.find_spec("flower") is not None
    worker = processes["worker"]
    # Every lane, or a lane's messages wait forever (tasks/lanes.py).
    assert worker[worker.index("-Q") + 1].split(",") == list(names.WORKER_QUEUES)


def test_the_default_procfile_needs_nothing_beyond_a_plain_install() -> None:
    # A plain install has no flower (the monitoring extra) and the API needs API_KEYS: neither
    # may stop `honcho start` on a first run.
    assert all(argv[3] != "flower" for argv in procfile("Procfile").values() if argv[0] == "celery")
    assert all(argv[1] != "serve" for argv in procfile("Procfile").values() if argv[1:2])


def run_honcho(procfile_name: str, env: dict[str, str], log: Path, ports: tuple[int, ...]) -> str:
    """Start `honcho -f PROCFILE start`, check it still runs after every process came up, then
    stop it as an operator would (SIGTERM) and return its output."""
    with log.open("w") as out:
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "-f", str(ROOT / procfile_name), "start"],
            cwd=ROOT,
            env=env | {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while "ready." not in log.read_text() and time.monotonic() < deadline:
            assert honcho.poll() is None, log.read_text()[-4000:]
            time.sleep(0.5)
        assert "ready." in log.read_text(), log.read_text()[-4000:]
        for port in ports:
            wait_for_port(port, timeout=60)
        time.sleep(5)  # a few seconds more: nothing exits after start
        assert honcho.poll() is None, log.read_text()[-4000:]
        honcho.send_signal(signal.SIGTERM)
        honcho.wait(timeout=60)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
    return log.read_text()


@pytest.mark.slow
def test_honcho_start_keeps_the_default_procfile_running(
    pg_url: str, rabbitmq_broker_url: str, tmp_path: Path
) -> None:
    env = worker_env(
        database_url=pg_url,
        broker_url=rabbitmq_broker_url,
        cache_prefix=unique_name("jwprocfile"),
        WORKER_CONCURRENCY="1",
        BEAT_SCHEDULE_FILE=str(tmp_path / "beat-schedule"),
    )
    output = run_honcho("Procfile", env, tmp_path / "honcho.log", ())
    for process in PROCFILES["Procfile"]:
        assert re.search(rf"{process}\.1\s+\| ", output), output[-4000:]
    # Beat published the dispatch, the worker ran it, listen listened: the three work together.
    assert re.search(rf"worker\.1.*Task {re.escape(names.DISPATCH_DUE)}\[.*\] succeeded", output)
    assert re.search(r"listen\.1.*listening on channel", output), output[-4000:]


@pytest.mark.slow
def test_honcho_start_keeps_procfile_all_running(
    pg_url: str, rabbitmq_broker_url: str, tmp_path: Path
) -> None:
    api_port, flower_port = free_port(), free_port()
    env = worker_env(
        database_url=pg_url,
        broker_url=rabbitmq_broker_url,
        cache_prefix=unique_name("jwprocfile"),
        WORKER_CONCURRENCY="1",
        BEAT_SCHEDULE_FILE=str(tmp_path / "beat-schedule"),
        API_KEYS=f"{uuid.uuid4()}:procfile-test-key",
        API_PORT=str(api_port),
        FLOWER_PORT=str(flower_port),
    )
    output = run_honcho("Procfile.all", env, tmp_path / "honcho.log", (api_port, flower_port))
    for process in PROCFILES["Procfile.all"]:
        assert re.search(rf"{process}\.1\s+\| ", output), output[-4000:]


# --- CI runs what the README says -------------------------------------------------------------


def readme_commands() -> list[str]:
    """The README's two commands: the first sh block after each of its first two paragraphs that
    introduce one (the demo, then the tests)."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    demo, tests = readme_commands()
    assert demo.endswith("journey-worker demo"), demo
    assert "pytest" in tests, tests
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # The last thing CI does, as written in the README.
    assert ci[-1] == tests
