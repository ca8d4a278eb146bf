"""Benchmark of the read-only API at 1,000,000 rows: keyset pages (page 1 against page 10,000,
and OFFSET for contrast), exports (time, and the memory of the server and of the CLI), and the
funnel view's refresh.

    .venv/bin/python -m bench.api_read [--rows 1000000] [--json docs/api_benchmarks.json]

It creates a scratch database on the server (DATABASE_URL, else the test server), migrates it,
COPY-loads 1,000,000 journey contacts on one journey and 1,000,000 executions (10,000 of those
contacts x 100 steps, a message for every fourth), runs `journey-worker serve` on a free loopback
port against it, measures over real HTTP, and drops the database (unless --keep).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from bench.seed import create_database, drop_database, libpq_dsn, server_url
from db import stats
from db.migrate import upgrade

KEY = "bench-api-key-0123456789abcdef"
STEPS = 100
STATUSES = ("ACTIVE", "WAITING", "COMPLETED", "COMPLETED", "COMPLETED", "COMPLETED", "FAILED")
BASE = datetime(2026, 10, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _copy(dsn: str, sql: str, rows: Iterator[tuple[Any, ...]]) -> int:
    count = 0
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        # The rows are consistent by construction: skip per-row foreign key triggers.
        cur.execute("SET session_replication_role = replica")
        with cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
    return count


def load(url: URL, rows: int) -> dict[str, Any]:
    """COPY the rows in; returns the ids the measurements need and the load time."""
    dsn = libpq_dsn(url)
    tenant, journey = uuid.uuid4(), uuid.uuid4()
    nodes = [uuid.uuid4() for _ in range(5)]
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'bench')", (tenant,))
        conn.execute(
            "INSERT INTO journeys (id, tenant_id, name, status, entry_node_id) "
            "VALUES (%s, %s, 'bench', 'ACTIVE', %s)",
            (journey, tenant, nodes[0]),
        )
        for position, node in enumerate(nodes):
            conn.execute(
                "INSERT INTO journey_nodes (id, tenant_id, journey_id, type) "
                "VALUES (%s, %s, %s, %s)",
                (
                    node,
                    tenant,
                    journey,
                    ("send_sms", "wait", "condition", "send_sms", "exit")[position],
                ),
            )
    contacts = [uuid.uuid4() for _ in range(rows)]
    journey_contacts = [uuid.uuid4() for _ in range(rows)]
    began = time.perf_counter()
    _copy(
        dsn,
        "COPY contacts (id, tenant_id, phone) FROM STDIN",
        ((c, tenant, f"+1{i:010d}") for i, c in enumerate(contacts)),
    )
    # Three enrollments per second: ties on created_at, as a bulk enrollment makes them.
    _copy(
        dsn,
        "COPY journey_contacts (id, tenant_id, journey_id, contact_id, status, current_node_id, "
        "created_at, updated_at) FROM STDIN",
        (
            (
                jc,
                tenant,
                journey,
                contacts[i],
                STATUSES[i % len(STATUSES)],
                nodes[i % 5],
                BASE + timedelta(seconds=i // 3),
                BASE,
            )
            for i, jc in enumerate(journey_contacts)
        ),
    )
    history = journey_contacts[: rows // STEPS]
    execution_ids: list[uuid.UUID] = []

    def executions() -> Iterator[tuple[Any, ...]]:
        for i, jc in enumerate(history):
            for step in range(STEPS):
                execution = uuid.uuid4()
                if step % 4 == 0:
                    execution_ids.append(execution)
                at = BASE + timedelta(days=(step + i) % 30, seconds=i)
                yield (
                    execution,
                    tenant,
                    jc,
                    nodes[step % 5],
                    "FAILED" if step % 9 == 8 else "COMPLETED",
                    at,
                    step,
                    at,
                    at,
                    '{"ok": true}',
                )

    _copy(
        dsn,
        "COPY journey_node_executions (id, tenant_id, journey_contact_id, node_id, status, "
        "executed_at, step_seq, created_at, updated_at, result) FROM STDIN",
        executions(),
    )
    _copy(
        dsn,
        "COPY messages (tenant_id, contact_id, journey_node_execution_id, direction, body, "
        "status) FROM STDIN",
        (
            (
                tenant,
                contacts[0],
                e,
                "OUTBOUND",
                "Hi, your order shipped",
                ("SENT", "QUEUED")[n % 2],
            )
            for n, e in enumerate(execution_ids)
        ),
    )
    loaded = time.perf_counter() - began
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return {
        "tenant": tenant,
        "journey": journey,
        "busy": history[0],
        "load_seconds": loaded,
        "executions": len(history) * STEPS,
        "messages": len(execution_ids),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def journey_worker() -> str:
    return str(Path(sys.executable).parent / "journey-worker")


def ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
    }


def walk(client: httpx.Client, path: str, limit: int, params: dict[str, str]) -> dict[str, Any]:
    """Every page to the end, timing each request; the cursors of page 1 and the last page."""
    timings: list[float] = []
    cursors: list[str | None] = [None]
    rows = 0
    while True:
        query = {"limit": str(limit), **params}
        if cursors[-1]:
            query["cursor"] = cursors[-1]
        began = time.perf_counter()
        response = client.get(path, params=query)
        timings.append(time.perf_counter() - began)
        response.raise_for_status()
        body = response.json()
        rows += len(body["items"])
        if body["next_cursor"] is None:
            break
        cursors.append(body["next_cursor"])
    return {"pages": len(timings), "rows": rows, "timings": timings, "last_cursor": cursors[-1]}


def repeat(client: httpx.Client, path: str, params: dict[str, str], times: int) -> list[float]:
    timings = []
    for _ in range(times):
        began = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        timings.append(time.perf_counter() - began)
    return timings


def sql_ms(dsn: str, sql: str, params: tuple[Any, ...]) -> float:
    """Execution time PostgreSQL reports (EXPLAIN ANALYZE), median of 5."""
    times = []
    with psycopg.connect(dsn) as conn:
        for _ in range(5):
            plan = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchone()[0]
            times.append(plan[0]["Execution Time"])
    return round(statistics.median(times), 2)


def export(client: httpx.Client, pid: int, path: str) -> dict[str, Any]:
    before = vm_kb(pid, "VmHWM")
    began = time.perf_counter()
    size = lines = 0
    with client.stream("GET", path, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    seconds = time.perf_counter() - began
    return {
        "seconds": round(seconds, 2),
        "bytes": size,
        "lines": lines,
        "rows_per_second": round(lines / seconds),
        "peak_rss_mb_before": round(before / 1024, 1),
        "peak_rss_mb_after": round(vm_kb(pid, "VmHWM") / 1024, 1),
    }


# Why not ru_maxrss from wait4: Linux carries a process's high-water mark across exec, so a
# child spawned by a big parent reports the parent's size. VmHWM is the peak of the process's
# own address space, which exec starts afresh: the CLI prints it on its way out.
PEAK_RSS_WRAPPER = """
import atexit, sys
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("peak " + line)
atexit.register(report)
from worker.cli import main
sys.argv = ["journey-worker", *sys.argv[1:]]
main()
"""


def run_cli_measuring_peak(args: list[str], env: dict[str, str]) -> tuple[int, int, str]:
    """`journey-worker ARGS` in a fresh process: (exit code, its peak RSS in kB, stderr)."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    peaks = [line for line in result.stderr.splitlines() if line.startswith("peak VmHWM:")]
    return result.returncode, int(peaks[-1].split()[2]) if peaks else 0, result.stderr


def cli_export(url: URL, journey: uuid.UUID, fmt: str, output: Path) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
    began = time.perf_counter()
    code, peak_kb, stderr = run_cli_measuring_peak(
        ["export", str(journey), "--format", fmt, "-o", str(output)], env
    )
    if code:
        raise RuntimeError(f"export exited with {code}: {stderr[-500:]}")
    seconds = time.perf_counter() - began
    size = output.stat().st_size
    output.unlink()
    return {"seconds": round(seconds, 2), "bytes": size, "peak_rss_mb": round(peak_kb / 1024, 1)}


def measure(url: URL, ids: dict[str, Any], rows: int, limit: int) -> dict[str, Any]:
    dsn = libpq_dsn(url)
    results: dict[str, Any] = {}
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "API_KEYS": f"{ids['tenant']}:{KEY}",
        "API_PORT": str(port),
    }
    server = subprocess.Popen([journey_worker(), "serve", "--log-level", "WARNING"], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("serve did not start") from None
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {KEY}"}
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            contacts = f"/v1/journeys/{ids['journey']}/contacts"
            for name, params in (
                ("journey_contacts", {}),
                ("journey_contacts_completed", {"status": "COMPLETED"}),
            ):
                log(f"walking {name} to the end, {limit} per page")
                walked = walk(client, contacts, limit, params)
                first = repeat(client, contacts, {"limit": str(limit), **params}, 50)
                last = repeat(
                    client,
                    contacts,
                    {"limit": str(limit), "cursor": walked["last_cursor"], **params},
                    50,
                )
                results[name] = {
                    "pages": walked["pages"],
                    "rows": walked["rows"],
                    "walk_first_100_pages": ms(walked["timings"][:100]),
                    "walk_last_100_pages": ms(walked["timings"][-100:]),
                    "page_1_repeated": ms(first),
                    f"page_{walked['pages']}_repeated": ms(last),
                }
            # The SQL underneath, and what OFFSET would cost at the same depth.
            deep = rows - limit
            row = (
                psycopg.connect(dsn)
                .execute(
                    "SELECT created_at, id FROM journey_contacts WHERE journey_id = %s "
                    "ORDER BY created_at, id OFFSET %s LIMIT 1",
                    (ids["journey"], deep - 1),
                )
                .fetchone()
            )
            keyset_sql = (
                "SELECT * FROM journey_contacts WHERE journey_id = %s AND tenant_id = %s "
                "AND (created_at, id) > (%s, %s) ORDER BY created_at, id LIMIT %s"
            )
            offset_sql = (
                "SELECT * FROM journey_contacts WHERE journey_id = %s AND tenant_id = %s "
                "ORDER BY created_at, id OFFSET %s LIMIT %s"
            )
            results["sql_execution_ms"] = {
                "keyset_page_1": sql_ms(
                    dsn,
                    "SELECT * FROM journey_contacts WHERE journey_id = %s "
                    "AND tenant_id = %s ORDER BY created_at, id LIMIT %s",
                    (ids["journey"], ids["tenant"], limit + 1),
                ),
                "keyset_last_page": sql_ms(
                    dsn, keyset_sql, (ids["journey"], ids["tenant"], *row, limit + 1)
                ),
                "offset_last_page": sql_ms(
                    dsn, offset_sql, (ids["journey"], ids["tenant"], deep, limit)
                ),
            }
            executions = f"/v1/journey-contacts/{ids['busy']}/executions"
            results["executions_page"] = ms(repeat(client, executions, {"limit": "100"}, 50))
            log("exports over HTTP")
            results["export_csv"] = export(
                client, server.pid, f"/v1/journeys/{ids['journey']}/executions.csv"
            )
            results["export_jsonl"] = export(
                client, server.pid, f"/v1/journeys/{ids['journey']}/executions.jsonl"
            )
            log("exports with the CLI")
            scratch = Path(f"/tmp/jw-bench-export-{uuid.uuid4().hex[:8]}")
            results["cli_export_csv"] = cli_export(url, ids["journey"], "csv", scratch)
            results["cli_export_jsonl"] = cli_export(url, ids["journey"], "jsonl", scratch)
            log("refreshing the funnel view")
            engine = create_engine(url)
            try:
                refreshes = []
                for _ in range(3):
                    result = stats.refresh(engine, statement_timeout_ms=0, lock_timeout_ms=5000)
                    refreshes.append(
                        {"concurrently": result.concurrently, "duration_ms": result.duration_ms}
                    )
                with engine.connect() as conn:
                    results["view_rows"] = conn.execute(
                        text(f"SELECT count(*) FROM {stats.VIEW}")
                    ).scalar_one()
            finally:
                engine.dispose()
            results["refresh"] = refreshes
            results["stats_endpoint"] = ms(
                repeat(client, f"/v1/journeys/{ids['journey']}/stats", {"days": "30"}, 20)
            )
    finally:
        server.terminate()
        server.wait(30)
    return results


@click.command()
@click.option(
    "--rows",
    default=1_000_000,
    show_default=True,
    help="Journey contacts on the journey, and executions (rows / 100 contacts x 100).",
)
@click.option("--limit", default=100, show_default=True, help="Rows per page.")
@click.option(
    "--database-url",
    default=None,
    help="PostgreSQL server for the scratch database [default: DATABASE_URL, else the "
    "test server].",
)
@click.option("--keep", is_flag=True, help="Keep the scratch database.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    rows: int, limit: int, database_url: str | None, keep: bool, json_path: Path | None
) -> None:
    server = server_url(database_url)
    url = create_database(server)
    log(f"scratch database {url.database}")
    try:
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        log(f"COPY-loading {rows:,} journey contacts and {rows:,} executions")
        ids = load(url, rows)
        log(f"loaded in {ids['load_seconds']:.1f} s")
        results = {
            "rows": rows,
            "limit": limit,
            "load_seconds": round(ids["load_seconds"], 1),
            "executions": ids["executions"],
            "messages": ids["messages"],
            **measure(url, ids, rows, limit),
        }
    finally:
        if not keep:
            drop_database(server, str(url.database))
    print(json.dumps(results, indent=2, default=str))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
