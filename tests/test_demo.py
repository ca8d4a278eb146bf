"""The README's first command: the demo on the embedded default, from an empty folder; its
options' validation, its failure report, and the demo on a configured PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, insert, select, update

from db.migrate import upgrade
from db.models import JourneyContact, Tenant
from worker.cli import main
from worker.commands.demo import failure_message, failure_reasons, seed

REPO = Path(__file__).resolve().parent.parent


def run_demo(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", *args],
        cwd=cwd,
        env=base | {"PYTHONPATH": str(REPO)} | (env or {}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_demo_completes_every_journey_on_the_embedded_default(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--contacts", "30", "--wait-seconds", "0.5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "database=sqlite:///.journey-worker/demo.db broker=memory://" in out
    assert re.search(r"journeys\s+30 completed=15 exited=15", out), out
    # 30 welcome messages and 15 thank-yous, all handed to the (logging) provider.
    assert re.search(r"messages\s+45 sent=45", out), out
    assert re.search(r"node executions\s+120 in", out), out
    # The step tasks' statements are counted (batches and single steps alike), never 0.
    found = re.search(
        r"statements\s+([\d.]+) per node execution .*\((\d+\.\d) per step task, (\d+) tasks\)", out
    )
    assert found, out
    assert float(found.group(1)) > 0 and float(found.group(2)) > 0 and int(found.group(3)) >= 5, out
    assert (tmp_path / ".journey-worker" / "demo.db").exists()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--contacts", "0"], "Invalid value for '--contacts': 0 is not in the range x>=1"),
        (["--contacts", "-5"], "Invalid value for '--contacts': -5 is not in the range x>=1"),
        (["--wait-seconds", "-1"], "Invalid value for '--wait-seconds': -1.0 is not in the range"),
        (["--wait-seconds", "nan"], "Invalid value for '--wait-seconds': 'nan' is not a finite"),
        (["--wait-seconds", "inf"], "Invalid value for '--wait-seconds'"),
        (
            ["--wait-seconds", "200000000"],
            "Invalid value for '--wait-seconds': wait seconds must be a number from 0 to 158112000",
        ),
        (["--timeout", "0"], "Invalid value for '--timeout': 0.0 is not in the range x>0"),
    ],
)
def test_demo_refuses_bad_options_before_touching_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], problem: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["demo", *args])
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / ".journey-worker").exists()


def test_a_failed_demo_names_the_reasons_it_found(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    upgrade(engine, "head")
    demo = seed(engine, 5, 1.0)
    with engine.begin() as conn:
        ids = []
        for contact_id in demo.contact_ids:
            ids.append(
                conn.execute(
                    insert(JourneyContact)
                    .values(
                        tenant_id=demo.tenant_id,
                        journey_id=demo.journey_id,
                        contact_id=contact_id,
                        status="COMPLETED",
                    )
                    .returning(JourneyContact.id)
                ).scalar_one()
            )
        reasons = ["invalid_node_config: wait", "invalid_node_config: wait", "loop_detected"]
        for journey_contact_id, reason in zip(ids[:3], reasons, strict=True):
            conn.execute(
                update(JourneyContact)
                .where(JourneyContact.id == journey_contact_id)
                .values(status="FAILED", status_reason=reason)
            )
    reasons = failure_reasons(engine, demo)
    assert reasons == {"invalid_node_config: wait": 2, "loop_detected": 1}
    assert failure_message(reasons) == (
        "3 journeys FAILED: 2 x invalid_node_config: wait; 1 x loop_detected"
    )
    engine.dispose()


@pytest.mark.slow
def test_demo_on_a_postgres_url_says_what_it_migrates_and_cleans_up(
    tmp_path: Path, empty_pg_url: str
) -> None:
    # postgres://, as hosting platforms hand it out; a database never migrated before.
    url = "postgres://" + empty_pg_url.split("://", 1)[1]
    assert url.startswith("postgres://")
    result = run_demo(
        tmp_path,
        "--contacts",
        "6",
        "--wait-seconds",
        "0",
        "--cleanup",
        env={"DATABASE_URL": url},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    database = empty_pg_url.rsplit("/", 1)[1]
    assert re.search(
        rf"will migrate postgresql\+psycopg://\S+/{database} \(DATABASE_URL\) to the latest",
        result.stdout,
    ), result.stdout
    assert re.search(r"journeys\s+6 completed=3 exited=3", result.stdout), result.stdout
    assert "deleted the demo's tenant" in result.stdout
    engine = create_engine(empty_pg_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Tenant)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(JourneyContact)).scalar_one() == 0
    engine.dispose()
