"""The README's first command: the demo on the embedded default, from an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_completes_every_journey_on_the_embedded_default(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--contacts", "30", "--wait-seconds", "0.5"],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        timeout=240,
    )
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
