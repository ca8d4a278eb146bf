"""Benchmark of `journey-worker contacts import` at 1,000,000 rows, with journeys running.

    .venv/bin/python -m bench.contact_import [--rows 1000000] [--chunk-size 5000] [--json F]

It creates a scratch database (DATABASE_URL's server, else the test server), migrates it, inserts
the contacts of one tenant, 10,000 of them on a journey at an update_contact node (a step that
writes the very rows the import writes), writes a CSV of every contact (two attribute columns),
then runs the import as its own process while this one executes single-contact steps through
the engine, one after another, and records each step's latency: before the import (baseline)
and while it runs. The scratch database is dropped unless --keep.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import psycopg
from sqlalchemy import create_engine, text

from bench.seed import create_database, drop_database, libpq_dsn, seed_journey, seed_walkers
from bench.seed import server_url as bench_server_url
from db import engine as db_engine
from db.migrate import upgrade
from db.settings import DbSettings
from db.step_store import step_store
from tasks.engine import BatchCommand, StepEngine, StepRef
from tasks.lookups import JourneyReader
from tasks.settings import EngineSettings

ROOT = Path(__file__).resolve().parent.parent
PROBE_CONTACTS = 10_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def step_latency(
    tenant: Any, node: Any, walkers: list[Any], settings: EngineSettings, until: Any
) -> list[float]:
    """Run one walker's update_contact step at a time until `until()` says stop."""
    samples = []
    while walkers and not until():
        walker = walkers.pop()
        began = time.perf_counter()
        with step_store() as store:
            StepEngine(store, JourneyReader(None), settings).run(
                BatchCommand(tenant, node, (StepRef(walker.journey_contact_id, 0),), True)
            )
        samples.append(time.perf_counter() - began)
        time.sleep(0.01)
    return samples


@click.command()
@click.option("--rows", type=click.IntRange(min=1000), default=1_000_000, show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--database-url", default=None, help="Server [default: DATABASE_URL, else test].")
@click.option("--keep", is_flag=True, help="Keep the scratch database.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    rows: int, chunk_size: int, database_url: str | None, keep: bool, json_path: Path | None
) -> None:
    server = bench_server_url(database_url)
    url = create_database(server)
    log(f"scratch database {url.database}")
    results: dict[str, Any] = {"rows": rows, "chunk_size": chunk_size}
    try:
        engine = create_engine(url)
        upgrade(engine)
        settings = EngineSettings()
        journey = seed_journey(engine, 3)  # send_sms, condition, update_contact
        walkers = seed_walkers(engine, journey, PROBE_CONTACTS, settings)
        node = journey.node_ids[2]
        began = time.monotonic()
        with engine.begin() as conn:
            conn.execute(text("UPDATE journey_contacts SET current_node_id = :n"), {"n": node})
            conn.execute(
                text(
                    "INSERT INTO contacts (tenant_id, phone, attributes) "
                    "SELECT :t, '+1666' || lpad(n::text, 7, '0'), "
                    "jsonb_build_object('first_name', 'Bulk' || n, 'plan', 'basic') "
                    "FROM generate_series(1, :n) AS n"
                ),
                {"t": journey.tenant_id, "n": rows - PROBE_CONTACTS},
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE contacts"))
        engine.dispose()
        results["seed_seconds"] = round(time.monotonic() - began, 1)
        csv_path = ROOT / f".bench-contacts-{url.database}.csv"
        with psycopg.connect(libpq_dsn(url)) as conn, csv_path.open("wb") as out:
            # Random order, as an export from another system would be.
            copy_sql = (
                "COPY (SELECT id, 'gold', 'segment-' || (abs(hashtext(id::text)) % 10) "
                "FROM contacts ORDER BY md5(id::text)) TO STDOUT WITH (FORMAT csv)"
            )
            out.write(b"contact_id,plan,segment\n")
            with conn.cursor().copy(copy_sql) as copy:
                for block in copy:
                    out.write(bytes(block))
        results["csv_bytes"] = csv_path.stat().st_size
        log(f"seeded {rows:,} contacts in {results['seed_seconds']} s; CSV {csv_path}")

        db_engine.use_engine(
            db_engine.build_engine(DbSettings(url=url, pool_size=2, max_overflow=0))
        )
        results["load_average_before"] = os.getloadavg()
        baseline_until = time.monotonic() + 10
        baseline = step_latency(
            journey.tenant_id, node, walkers, settings, lambda: time.monotonic() > baseline_until
        )
        log(f"baseline step latency {ms(baseline)}")
        env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
        command = [sys.executable, "-m", "worker.cli", "contacts", "import", str(csv_path)]
        command += ["--tenant", str(journey.tenant_id), "--chunk-size", str(chunk_size)]
        command += ["--quiet", "--json"]
        started = time.monotonic()
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        during = step_latency(
            journey.tenant_id, node, walkers, settings, lambda: proc.poll() is not None
        )
        out, _ = proc.communicate()
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise click.ClickException(f"the import failed ({proc.returncode})")
        results["load_average_after"] = os.getloadavg()
        results["import"] = json.loads(out.strip().splitlines()[-1])
        results["import_wall_seconds"] = round(wall, 1)
        results["updates_per_second"] = round(rows / wall)
        results["step_latency_baseline"] = ms(baseline)
        results["step_latency_during_import"] = ms(during)
        csv_path.unlink(missing_ok=True)
    finally:
        db_engine.use_engine(None)
        if not keep:
            drop_database(server, str(url.database))
    print(json.dumps(results, indent=2))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
