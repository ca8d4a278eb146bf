"""`journey-worker bench` at a tiny size: it runs, it cleans up, and its JSON is complete.

Timings are never asserted (CI machines are noisy); counts are, where they are counts.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from bench.e2e import Stall
from bench.errors import BenchError
from bench.report import REQUIRED_KEYS, blast_goals, blast_table, goals, goals_text, table
from bench.run import parse_brokers, parse_modes
from bench.stats import percentile
from tests.services import PG_ADMIN_URL, REDIS_URL, require

ROOT = Path(__file__).resolve().parent.parent
# Celery's broker_url prefers CELERY_BROKER_URL over the URL an app was given: the bench must
# publish to its own broker namespace whatever the user's environment says (nothing listens here).
BOGUS_BROKER = "redis://127.0.0.1:9/0"
MODES = ("naive", "optimized", "ceiling")
# Keys that have no meaning for a mode: no cache in naive or ceiling, no database in ceiling.
NOT_APPLICABLE = {
    ("naive", "cache_hit_ratio"),
    ("ceiling", "cache_hit_ratio"),
    ("ceiling", "growth_ratio"),
}
POSITIVE = (
    "inproc_p50_ms",
    "inproc_p99_ms",
    "e2e_per_s",
    "e2e_p99_ms",
    "ceiling_per_s",
    "ratio_vs_ceiling",
)


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("journey-worker")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from worker.cli import main; main()"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_runs_at_a_tiny_size_and_reports_every_mode(tmp_path: Path) -> None:
    require("PostgreSQL")
    require("Redis")
    out, chart = tmp_path / "out.json", tmp_path / "chart.png"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "REDIS_"))
    }
    env.update(DATABASE_URL=PG_ADMIN_URL, REDIS_URL=REDIS_URL, CELERY_BROKER_URL=BOGUS_BROKER)
    tiny = (
        "bench --contacts 5 --nodes 3 --growth-rows 2000 --brokers redis --inproc-contacts 6 "
        "--growth-contacts 3 --warmup-contacts 2 --timeout 180 --modes naive,optimized,ceiling"
    )
    args = [*_cli(), *tiny.split(), "--json", str(out), "--chart", str(chart)]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "goals:" in done.stdout

    rows = json.loads(out.read_text())
    assert sorted((r["mode"], r["broker"]) for r in rows) == sorted((m, "redis") for m in MODES)
    by_mode = {r["mode"]: r for r in rows}
    for row in rows:
        for key in REQUIRED_KEYS:
            assert key in row, (row["mode"], key)
            if key in ("mode", "broker"):
                continue
            value = row[key]
            if (row["mode"], key) in NOT_APPLICABLE:
                assert value is None, (row["mode"], key, value)
                continue
            assert isinstance(value, int | float), (row["mode"], key, value)
            assert math.isfinite(value) and value >= 0, (row["mode"], key, value)
        for key in POSITIVE:
            assert row[key] > 0, (row["mode"], key, row[key])

    naive, optimized, ceiling = (by_mode[m] for m in MODES)
    # Counts, not timings: the seed's before-code runs more statements and round trips.
    assert naive["statements_per_node"] > optimized["statements_per_node"] > 0
    assert naive["db_roundtrips_per_node"] > optimized["db_roundtrips_per_node"] > 0
    assert optimized["redis_roundtrips_per_node"] > 0 and naive["redis_roundtrips_per_node"] == 0
    assert ceiling["statements_per_node"] == 0 and ceiling["db_roundtrips_per_node"] == 0
    assert 0 <= optimized["cache_hit_ratio"] <= 1
    assert optimized["node_tenant_statements"] == 0  # warm cache: no node or tenant reads
    assert naive["growth_ratio"] > 0 and optimized["growth_ratio"] > 0
    assert ceiling["ratio_vs_ceiling"] == pytest.approx(1.0)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # It cleaned up after itself: its database and its cache keys are gone.
    header = re.search(r"database (jw_bench_\w+) on .*cache prefix (jwbench_\w+)", done.stdout)
    assert header, done.stdout[:2000]
    database, prefix = header.groups()
    admin = create_engine(PG_ADMIN_URL)
    with admin.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": database}
        )
        assert left.scalar_one() == 0
    admin.dispose()
    client = redis.Redis.from_url(REDIS_URL)
    assert list(client.scan_iter(match=f"{prefix}:*")) == []
    client.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_blast_runs_on_both_brokers_exactly_once_with_a_foreign_broker_url_set(
    tmp_path: Path,
) -> None:
    """A tiny blast through journeys.enroll on Redis and RabbitMQ, with CELERY_BROKER_URL
    pointing at a port nothing listens on: before the fix the bench published there and waited
    for its timeout. Counts are asserted (statements per batch, executions, exactly once)."""
    require("PostgreSQL")
    require("Redis")
    require("RabbitMQ")
    out = tmp_path / "blast.json"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "REDIS_"))
    }
    # Small batches (the worker reads BATCH_SIZE): several per node, so the median per batch is
    # the steady state and not a node's first batch, which reads node and tenant into the cache.
    env.update(
        DATABASE_URL=PG_ADMIN_URL,
        REDIS_URL=REDIS_URL,
        CELERY_BROKER_URL=BOGUS_BROKER,
        BATCH_SIZE="20",
    )
    tiny = (
        "bench --modes blast --brokers redis,rabbitmq --blast-contacts 150 "
        "--blast-ceiling-contacts 10 --blast-warmup-contacts 10 --timeout 120"
    )
    args = [*_cli(), *tiny.split(), "--json", str(out)]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    print(done.stdout[-3000:])
    rows = json.loads(out.read_text())
    assert sorted(r["broker"] for r in rows) == ["rabbitmq", "redis"]
    for row in rows:
        assert row["mode"] == "blast" and row["task_events"] is False, row
        assert row["exactly_once"] is True, row["checks"]
        assert row["contacts"] == 150 and row["node_executions"] == 600
        assert row["e2e_per_s"] > 0 and row["ceiling_per_s"] > 0 and row["ratio_vs_ceiling"] > 0
        # One read and one write per batch, whatever its size (a cold cache's node and tenant
        # reads land on a first batch only, so the median is the steady state).
        assert row["statements_per_batch_median"] == {
            "send_sms": 2,
            "update_contact": 2,
            "condition": 2,
            "exit": 2,
        }, row["statements_per_batch"]
        assert row["statements_per_node"] < 1  # per contact, far below the single path's 2
        assert row["batches"]["exit"] >= 1 and row["mean_batch_contacts"] > 1
        assert row["tasks"]["journeys.enroll"] == 1
    assert "goals:" in done.stdout and "blast exactly once" in done.stdout


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0], 99) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    assert math.isnan(percentile([], 50))


def test_parse_brokers_rejects_unknown_names() -> None:
    assert parse_brokers("redis, RabbitMQ,redis") == ("redis", "rabbitmq")
    with pytest.raises(ValueError, match="kafka"):
        parse_brokers("redis,kafka")
    assert parse_modes("blast, Ceiling,blast") == ("blast", "ceiling")
    with pytest.raises(ValueError, match="fast"):
        parse_modes("blast,fast")


def _row(mode: str, broker: str, **values: float | None) -> dict:
    base = dict.fromkeys(REQUIRED_KEYS, 1.0)
    return {**base, "mode": mode, "broker": broker, **values}


def test_goals_report_pass_miss_and_not_run() -> None:
    rows = [
        _row("naive", "redis", statements_per_node=9.0, inproc_p50_ms=10.0),
        _row(
            "optimized",
            "redis",
            statements_per_node=2.0,
            db_roundtrips_per_node=4.0,
            redis_roundtrips_per_node=1.0,
            inproc_p50_ms=4.0,
            ratio_vs_ceiling=0.75,
            growth_ratio=1.05,
        ),
        _row("ceiling", "redis", cache_hit_ratio=None, growth_ratio=None),
    ]
    results = {goal: passed for goal, passed, _ in goals(rows, node_tenant_statements=0)}
    assert results["warm cache: zero node/tenant statements"] is True
    assert results[">=50% fewer statements per node than naive"] is True
    assert results["<=3 DB round trips per node, commit included"] is False
    assert results["<=1 Redis round trip per node"] is True
    assert results["in-process >=2x faster than naive (p50)"] is True
    assert results["e2e >=0.70 of ceiling on redis"] is True
    assert results["e2e >=0.60 of ceiling on rabbitmq"] is None
    assert results["growth ratio <=1.2"] is True
    text_out = goals_text(goals(rows, 0))
    assert "MISS" in text_out and "PASS" in text_out and "n/a" in text_out
    assert "optimized" in table(rows) and " - " in table(rows)


def _blast_row(**values: object) -> dict:
    row = {
        "mode": "blast",
        "broker": "redis",
        "task_events": False,
        "contacts": 100,
        "node_executions": 400,
        "seconds": 0.1,
        "e2e_per_s": 4000.0,
        "ceiling_per_s": 500.0,
        "ratio_vs_ceiling": 8.0,
        "statements_per_node": 0.02,
        "db_roundtrips_per_node": 0.02,
        "statements_per_batch": dict.fromkeys(
            ("send_sms", "update_contact", "condition", "exit"), 2.0
        ),
        "statements_per_batch_median": dict.fromkeys(
            ("send_sms", "update_contact", "condition", "exit"), 2.0
        ),
        "statements_per_batch_max": dict.fromkeys(
            ("send_sms", "update_contact", "condition", "exit"), 2
        ),
        "commits_per_batch": dict.fromkeys(
            ("send_sms", "update_contact", "condition", "exit"), 0.0
        ),
        "publishes_per_batch": dict.fromkeys(
            ("send_sms", "update_contact", "condition", "exit"), 1.0
        ),
        "batches": dict.fromkeys(("send_sms", "update_contact", "condition", "exit"), 1),
        "mean_batch_contacts": 100.0,
        "task_ms_median": {},
        "task_sql_ms_median": {},
        "children_busy_share": 0.5,
        "statements_per_enroll": 2.0,
        "statements_per_delivery_batch": 5.0,
        "worker_child_rss_growth_mb": 3.0,
        "exactly_once": True,
        "checks": [],
    }
    return {**row, **values}


def test_blast_goals_pass_and_miss() -> None:
    good = _blast_row()
    slow = _blast_row(
        broker="rabbitmq",
        e2e_per_s=900.0,
        ratio_vs_ceiling=1.5,
        statements_per_batch_median={
            "send_sms": 3.0,
            "update_contact": 2.0,
            "condition": 2.0,
            "exit": 2.0,
        },
        worker_child_rss_growth_mb=80.0,
        exactly_once=False,
        checks=["messages: expected 150, found 151"],
    )
    results = {goal: passed for goal, passed, _ in blast_goals([good, slow])}
    assert all(results[g] for g in results if "redis" in g)
    assert not any(results[g] for g in results if "rabbitmq" in g)
    assert "messages: expected 150" in goals_text(blast_goals([slow]))
    assert "redis" in blast_table([good, slow]) and "NO" in blast_table([good, slow])


def test_a_stalled_run_fails_saying_messages_were_lost() -> None:
    stall = Stall(seconds=0.05)
    stall.check(3, "ceiling: 3 of 8")
    time.sleep(0.1)
    stall.check(4, "ceiling: 4 of 8")  # progress resets the clock
    time.sleep(0.1)
    with pytest.raises(BenchError, match="4 of 8, and no task finished for 0s: messages"):
        stall.check(4, "ceiling: 4 of 8")
