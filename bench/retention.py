"""Benchmark of the retention purge at size: rows deleted per second and a step's latency
meanwhile, for the purge as it was (every batch starts its index scan at the cutoff) and as it
is (each batch continues below where the previous one stopped).

    .venv/bin/python -m bench.retention [--rows 10000000] [--seconds 120] [--json F]

It creates a scratch database, migrates it, inserts `rows` executions (100 per journey contact,
executed_at spread evenly over the last 180 days, so about half are older than the 90-day
cutoff) with the table's indexes built after the load, vacuums and analyzes, then, for each
variant in turn, purges for at most `--seconds` (5,000-row batches, each its own transaction,
as journeys.purge_executions does) while single-contact steps run through the engine one after
another (each inserts an execution into the same table). Between variants the table is
vacuumed, so each starts from a clean index. The scratch database is dropped unless --keep.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine, create_engine, text

from bench.contact_import import ms, step_latency
from bench.seed import create_database, drop_database, seed_journey, seed_walkers
from bench.seed import server_url as bench_server_url
from db import engine as db_engine
from db import retention
from db.engine import transaction
from db.migrate import upgrade
from db.settings import DbSettings
from tasks.settings import EngineSettings

PER_CONTACT = 100
DAYS = 180
CUTOFF_DAYS = 90


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load(engine: Engine, rows: int, journey: Any) -> float:
    began = time.monotonic()
    contacts = max(1, rows // PER_CONTACT)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        indexes = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = "
                "'journey_node_executions' AND indexname <> 'journey_node_executions_pkey'"
            )
        ).all()
        for name, _ in indexes:
            conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(text("SET session_replication_role = replica"))  # no per-row FK checks
        conn.execute(text("SET statement_timeout = 0"))
        conn.execute(
            text(
                "INSERT INTO journey_contacts (id, tenant_id, journey_id, contact_id, status, "
                "step_seq, completed_at) "
                "SELECT gen_random_uuid(), :t, :j, (SELECT id FROM contacts LIMIT 1), "
                "'COMPLETED', 100, now() FROM generate_series(1, :n)"
            ),
            {"t": journey.tenant_id, "j": journey.journey_id, "n": contacts},
        )
        # Slices of journey contacts, so no one statement holds everything in memory.
        slice_size = 10_000
        for offset in range(0, contacts, slice_size):
            conn.execute(
                text(
                    """
                    INSERT INTO journey_node_executions (tenant_id, journey_contact_id, node_id,
                        status, result, executed_at, step_seq, created_at, updated_at)
                    SELECT jc.tenant_id, jc.id, :node, 'COMPLETED', '{}', at, s, at, at
                      FROM (SELECT id, tenant_id FROM journey_contacts
                             WHERE status = 'COMPLETED' ORDER BY id OFFSET :o LIMIT :l) jc
                     CROSS JOIN generate_series(0, 99) AS s
                     CROSS JOIN LATERAL (SELECT now() - random() * interval '180 days'
                                         + s * interval '0 seconds' AS at) AS t
                    """
                ),
                {"node": journey.node_ids[0], "o": offset, "l": slice_size},
            )
            if offset % 200_000 == 0:
                log(f"  {offset * PER_CONTACT:,} executions")
        for _, definition in indexes:
            conn.execute(text(definition))
        conn.execute(text("VACUUM ANALYZE journey_node_executions"))
        conn.execute(text("VACUUM ANALYZE journey_contacts"))
    return time.monotonic() - began


# The purge as it was: the cutoff compared with clock_timestamp() (volatile, so no index bound)
# in every batch, and every batch starting its range at the cutoff.
BEFORE_SQL = text(
    """
    DELETE FROM journey_node_executions WHERE id IN (
        SELECT id FROM journey_node_executions
         WHERE executed_at IS NOT NULL
           AND executed_at < clock_timestamp() + make_interval(secs => :seconds)
         ORDER BY executed_at DESC LIMIT :n FOR UPDATE SKIP LOCKED)
    """
)


def purge(
    seconds: float, batch_size: int, variant: str, max_batches: int
) -> tuple[int, float, list[float], bool]:
    """Purge for at most `seconds` (and `max_batches`); returns deleted, elapsed, batch times
    and whether the old rows are all gone."""
    began = time.monotonic()
    deleted, batches, below, done = 0, [], None, False
    with transaction() as session:
        cutoff = retention.purge_cutoff(session, older_than=timedelta(days=CUTOFF_DAYS))
    while time.monotonic() - began < seconds and len(batches) < max_batches:
        start = time.perf_counter()
        with transaction() as session:
            if variant == "before":
                # No statement timeout: the point is to see how long one batch takes.
                session.execute(text("SET LOCAL statement_timeout = 0"))
                count = session.execute(
                    BEFORE_SQL, {"seconds": -CUTOFF_DAYS * 86400.0, "n": batch_size}
                ).rowcount
            else:
                batch = retention.purge_executions_batch(
                    session, cutoff=cutoff, batch_size=batch_size, below=below
                )
                count, below = batch.deleted, batch.oldest
        batches.append(time.perf_counter() - start)
        deleted += count
        if count < batch_size:
            done = True
            break
    return deleted, time.monotonic() - began, batches, done


def measure_variant(
    name: str,
    seconds: float,
    batch_size: int,
    variant: str,
    max_batches: int,
    probe: Callable[..., list[float]],
) -> dict[str, Any]:
    stop = threading.Event()
    samples: list[float] = []
    thread = threading.Thread(target=lambda: samples.extend(probe(stop.is_set)))
    thread.start()
    try:
        deleted, elapsed, batches, done = purge(seconds, batch_size, variant, max_batches)
    finally:
        stop.set()
        thread.join()
    first = batches[: max(1, len(batches) // 10)]
    last = batches[-max(1, len(batches) // 10) :]
    result = {
        "variant": name,
        "deleted": deleted,
        "seconds": round(elapsed, 1),
        "rows_per_second": round(deleted / elapsed) if elapsed else 0,
        "finished": done,
        "batches": len(batches),
        "batch_ms_first_tenth_median": round(statistics.median(first) * 1000, 1),
        "batch_ms_last_tenth_median": round(statistics.median(last) * 1000, 1),
        "batch_ms_max": round(max(batches) * 1000, 1),
        "step_latency": ms(samples),
    }
    log(f"{name}: {json.dumps(result)}")
    return result


@click.command()
@click.option("--rows", type=click.IntRange(min=10_000), default=10_000_000, show_default=True)
@click.option("--seconds", type=click.FloatRange(min=1), default=120, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--database-url", default=None, help="Server [default: DATABASE_URL, else test].")
@click.option("--keep", is_flag=True, help="Keep the scratch database.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    rows: int,
    seconds: float,
    batch_size: int,
    database_url: str | None,
    keep: bool,
    json_path: Path | None,
) -> None:
    server = bench_server_url(database_url)
    url = create_database(server)
    log(f"scratch database {url.database}")
    results: dict[str, Any] = {"rows": rows, "batch_size": batch_size, "budget_seconds": seconds}
    try:
        engine = create_engine(url)
        upgrade(engine)
        settings = EngineSettings()
        journey = seed_journey(engine, 3)
        walkers = seed_walkers(engine, journey, 20_000, settings)
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE journey_contacts SET current_node_id = :n"),
                {"n": journey.node_ids[2]},
            )
        log(f"loading {rows:,} executions")
        results["load_seconds"] = round(load(engine, rows, journey), 1)
        with engine.connect() as conn:
            results["old_rows"] = conn.execute(
                text(
                    "SELECT count(*) FROM journey_node_executions "
                    "WHERE executed_at < now() - interval '90 days'"
                )
            ).scalar_one()
            results["table_bytes"] = conn.execute(
                text("SELECT pg_total_relation_size('journey_node_executions')")
            ).scalar_one()
        log(f"loaded in {results['load_seconds']} s; {results['old_rows']:,} older than 90 days")
        db_engine.use_engine(
            db_engine.build_engine(DbSettings(url=url, pool_size=3, max_overflow=0))
        )

        def probe(until: Callable[[], bool]) -> list[float]:
            return step_latency(journey.tenant_id, journey.node_ids[2], walkers, settings, until)

        results["load_average_before"] = os.getloadavg()
        baseline_until = time.monotonic() + 10
        results["step_latency_baseline"] = ms(probe(lambda: time.monotonic() > baseline_until))
        variants = []
        plans = (
            ("before: clock_timestamp() cutoff, each batch from the cutoff", "before", 3),
            ("after: bound cutoff, each batch below the last", "after", 10**9),
        )
        for name, variant, max_batches in plans:
            variants.append(measure_variant(name, seconds, batch_size, variant, max_batches, probe))
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                began = time.monotonic()
                conn.execute(text("SET statement_timeout = 0"))
                conn.execute(text("VACUUM ANALYZE journey_node_executions"))
                variants[-1]["vacuum_after_seconds"] = round(time.monotonic() - began, 1)
        results["variants"] = variants
        results["load_average_after"] = os.getloadavg()
        engine.dispose()
    finally:
        db_engine.use_engine(None)
        if not keep:
            drop_database(server, str(url.database))
    print(json.dumps(results, indent=2, default=str))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
