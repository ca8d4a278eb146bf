"""The bench's outputs: one row per mode and broker, a table, the goals, JSON and a chart."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

REQUIRED_KEYS = (
    "mode",
    "broker",
    "statements_per_node",
    "db_roundtrips_per_node",
    "redis_roundtrips_per_node",
    "inproc_p50_ms",
    "inproc_p99_ms",
    "e2e_per_s",
    "e2e_p99_ms",
    "ceiling_per_s",
    "ratio_vs_ceiling",
    "cache_hit_ratio",
    "growth_ratio",
)

Row = dict[str, Any]

if TYPE_CHECKING:
    from bench.counters import Counts
    from bench.e2e import E2EResult


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    return format(value, spec)


COLUMNS: tuple[tuple[str, str, int, str], ...] = (
    ("mode", "mode", 9, ""),
    ("broker", "broker", 8, ""),
    ("statements_per_node", "stmts/node", 10, ".2f"),
    ("db_roundtrips_per_node", "db RT/node", 10, ".2f"),
    ("redis_roundtrips_per_node", "redis RT", 8, ".2f"),
    ("inproc_p50_ms", "p50 ms", 8, ".3f"),
    ("inproc_p95_ms", "p95 ms", 8, ".3f"),
    ("inproc_p99_ms", "p99 ms", 8, ".3f"),
    ("e2e_per_s", "e2e/s", 8, ".1f"),
    ("e2e_p50_ms", "e2e p50", 8, ".1f"),
    ("e2e_p99_ms", "e2e p99", 8, ".1f"),
    ("ratio_vs_ceiling", "x ceil", 7, ".2f"),
    ("cache_hit_ratio", "hit", 6, ".3f"),
    ("growth_ratio", "growth", 7, ".2f"),
)


def table(rows: Sequence[Row]) -> str:
    def cell(text: str, width: int, left: bool) -> str:
        return text.ljust(width) if left else text.rjust(width)

    header = " ".join(cell(title, width, not spec) for _, title, width, spec in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            " ".join(
                cell(str(row.get(key)) if not spec else _fmt(row.get(key), spec), width, not spec)
                for key, _, width, spec in COLUMNS
            )
        )
    return "\n".join(lines)


def _row(rows: Sequence[Row], mode: str, broker: str | None = None) -> Row | None:
    for row in rows:
        if row["mode"] == mode and (broker is None or row["broker"] == broker):
            return row
    return None


def goals(
    rows: Sequence[Row], node_tenant_statements: int | None
) -> list[tuple[str, bool | None, str]]:
    """(goal, PASS/MISS/None for not measured, the numbers behind it)."""
    results: list[tuple[str, bool | None, str]] = []
    opt, naive = _row(rows, "optimized"), _row(rows, "naive")
    if node_tenant_statements is not None:
        results.append(
            (
                "warm cache: zero node/tenant statements",
                node_tenant_statements == 0,
                f"{node_tenant_statements} statements on journey_nodes/tenants in the counted pass",
            )
        )
    if opt and naive:
        cut = 1 - opt["statements_per_node"] / naive["statements_per_node"]
        results.append(
            (
                ">=50% fewer statements per node than naive",
                cut >= 0.5,
                f"{opt['statements_per_node']:.2f} vs {naive['statements_per_node']:.2f}: "
                f"{cut:.0%} fewer",
            )
        )
        rt = opt["db_roundtrips_per_node"]
        formula = opt.get("db_roundtrips_formula_per_node")
        results.append(
            (
                "<=3 DB round trips per node, commit included",
                rt <= 3,
                f"{rt:.2f} on the wire (BEGIN and COMMIT included where sent)"
                + (f"; statements + commits = {formula:.2f}" if formula is not None else ""),
            )
        )
        results.append(
            (
                "<=1 Redis round trip per node",
                opt["redis_roundtrips_per_node"] <= 1,
                f"{opt['redis_roundtrips_per_node']:.2f}",
            )
        )
        speedup = naive["inproc_p50_ms"] / opt["inproc_p50_ms"]
        results.append(
            (
                "in-process >=2x faster than naive (p50)",
                speedup >= 2,
                f"{naive['inproc_p50_ms']:.3f} ms vs {opt['inproc_p50_ms']:.3f} ms: {speedup:.2f}x",
            )
        )
    for broker, floor in (("redis", 0.70), ("rabbitmq", 0.60)):
        row = _row(rows, "optimized", broker)
        if row is None:
            results.append((f"e2e >={floor:.2f} of ceiling on {broker}", None, "not run"))
            continue
        ratio = row["ratio_vs_ceiling"]
        results.append(
            (
                f"e2e >={floor:.2f} of ceiling on {broker}",
                ratio >= floor,
                f"{row['e2e_per_s']:.0f}/s vs ceiling {row['ceiling_per_s']:.0f}/s: {ratio:.2f}",
            )
        )
    if opt is not None and opt.get("growth_ratio") is not None:
        results.append(
            (
                "growth ratio <=1.2",
                opt["growth_ratio"] <= 1.2,
                f"{opt['growth_ratio']:.2f} "
                f"({opt.get('growth_rows_small')} -> {opt.get('growth_rows_large')} rows)",
            )
        )
    return results


def goals_text(results: Sequence[tuple[str, bool | None, str]]) -> str:
    lines = []
    for goal, passed, detail in results:
        mark = "n/a " if passed is None else ("PASS" if passed else "MISS")
        lines.append(f"  {mark}  {goal:<46} {detail}")
    return "\n".join(lines)


def per_node(counter: dict[Any, int], steps: int) -> dict[str, float]:
    """A counter per node execution, largest first, keys as text."""

    def key(k: Any) -> str:
        return " ".join(k) if isinstance(k, tuple) else str(k)

    ordered = sorted(counter.items(), key=lambda kv: (-kv[1], key(kv[0])))
    return {key(k): round(v / steps, 3) for k, v in ordered if v}


def breakdown(
    counts: dict[str, Counts],
    cpu: dict[str, float],
    pg_cpu: dict[str, float | None],
    pgss: dict[str, int],
) -> str:
    """Per node execution, for each database mode: statements by kind and table, the wire, CPU,
    Redis."""
    lines = []
    for mode in ("naive", "optimized"):
        c = counts[mode]
        pairs = ", ".join(f"{k} {v:.2f}" for k, v in per_node(c.pairs, c.steps).items())
        types = ", ".join(f"{t} {sum(v) / len(v):.1f}" for t, v in sorted(c.by_node_type.items()))
        simple = ", ".join(f"{k} {v:.2f}" for k, v in per_node(c.wire_queries, c.steps).items())
        wire = (
            f"{c.wire_roundtrips_per_node:.2f} round trips on the wire"
            + (f" ({simple} as simple queries)" if simple else " (no BEGIN or COMMIT)")
            if c.wire_roundtrips is not None
            else f"wire trace unavailable ({c.wire_note})"
        )
        redis_part = (
            ", ".join(f"{k} {v:.2f}" for k, v in per_node(c.redis_commands, c.steps).items())
            or "none"
        )
        pg = pg_cpu.get(mode)
        cpu_line = f"    CPU per node (timing pass): client {cpu[mode] * 1000:.2f} ms" + (
            f", PostgreSQL backend {pg * 1000:.2f} ms" if pg is not None else ""
        )
        lines += [
            f"  {mode} ({c.steps} steps counted): {c.statements_per_node:.2f} statements + "
            f"{c.per_node(c.commits):.2f} COMMIT per node; {wire}",
            f"    by kind and table: {pairs}",
            f"    statements by node type: {types}",
            cpu_line,
            *(
                [f"    pg_stat_statements: {pgss[mode] / c.steps:.2f} calls per node"]
                if mode in pgss
                else []
            ),
            f"    Redis per node: {redis_part}"
            + (
                f"; cache hit ratio {c.cache_hit_ratio:.3f}"
                if c.cache_hit_ratio is not None
                else ""
            ),
        ]
    return "\n".join(lines)


def e2e_line(kind: str, mode: str, round_: int, run: E2EResult) -> str:
    """One end-to-end run, as it finishes."""
    return (
        f"   {kind:<8} {mode:<9} round {round_}: {run.executions} steps in "
        f"{run.seconds:.2f}s = {run.per_s:.0f}/s, enqueue-to-commit "
        f"p50 {run.latency_ms(50):.1f} ms p99 {run.latency_ms(99):.1f} ms; "
        f"task in the child p50 {run.service_ms(50):.1f} ms"
        + (
            f", worker CPU {run.worker_cpu_per_step * 1000:.1f} ms/step"
            if run.worker_cpu_per_step is not None
            else ""
        )
        + (
            f", PostgreSQL CPU {run.pg_cpu_per_step * 1000:.1f} ms/step"
            if run.pg_cpu_per_step is not None
            else ""
        )
    )


def blast_line(label: str, row: Row) -> str:
    """One blast, as it finishes."""
    return (
        f"   {label}: {row['node_executions']:,} node executions in {row['seconds']:.2f}s = "
        f"{row['e2e_per_s']:.0f}/s ({_fmt(row['ratio_vs_ceiling'], '.2f')}x the ceiling); "
        f"{row['statements_per_node']:.4f} statements per node execution; exactly once: "
        + ("yes" if row["exactly_once"] else "NO: " + "; ".join(row["checks"]))
    )


def summary(
    sections: Sequence[str], notes: Sequence[str], results: Sequence[tuple[str, bool | None, str]]
) -> str:
    """The text printed at the end: the tables, the notes, the goals."""
    return "\n".join(
        [*sections, "notes:", *(f"  - {n}" for n in notes), "", "goals:", goals_text(results)]
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(rows: Sequence[Row], path: Path) -> None:
    path.write_text(json.dumps(_json_safe(list(rows)), indent=2, sort_keys=False) + "\n")


def chart(rows: Sequence[Row], path: Path, title: str) -> None:
    """Modes side by side: counts, in-process latency, e2e rate and latency, growth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = ["naive", "optimized", "ceiling"]
    colors = {"naive": "#c44e52", "optimized": "#4c72b0", "ceiling": "#8c8c8c"}
    brokers = sorted({r["broker"] for r in rows}, key=lambda b: (b != "redis", b))
    first = {m: _row(rows, m) for m in modes}

    def value(row: Row | None, key: str) -> float:
        v = row.get(key) if row else None
        return float(v) if isinstance(v, int | float) and math.isfinite(v) else 0.0

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(title, fontsize=11)

    def bars(
        ax: Any, keys: Sequence[tuple[str, str]], ylabel: str, heading: str, fmt: str = "%.2f"
    ) -> None:
        width = 0.8 / len(keys)
        for i, (key, label) in enumerate(keys):
            xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(modes))]
            ys = [value(first[m], key) for m in modes]
            labels = [
                "n/a" if first[m] is None or first[m].get(key) is None else fmt % y
                for m, y in zip(modes, ys, strict=True)
            ]
            rects = ax.bar(
                xs,
                ys,
                width,
                label=label,
                color=[colors[m] for m in modes],
                alpha=1.0 - 0.35 * i,
                edgecolor="black",
                linewidth=0.4,
            )
            ax.bar_label(rects, labels=labels, fontsize=7)
        ax.set_xticks(range(len(modes)), modes)
        ax.set_ylabel(ylabel)
        ax.set_title(heading, fontsize=10)
        if len(keys) > 1:
            ax.legend(fontsize=7)

    bars(
        axes[0][0],
        [
            ("statements_per_node", "statements"),
            ("db_roundtrips_per_node", "DB round trips"),
            ("redis_roundtrips_per_node", "Redis round trips"),
        ],
        "per node execution",
        "Work per node (solid: statements)",
    )
    bars(
        axes[0][1],
        [("inproc_p50_ms", "p50"), ("inproc_p95_ms", "p95"), ("inproc_p99_ms", "p99")],
        "ms",
        "In-process node time (no broker)",
    )
    bars(
        axes[0][2],
        [("growth_ratio", "growth")],
        "time at large / time at small table",
        "Growth: per-node p50 ratio",
    )
    axes[0][2].axhline(1.2, color="black", linestyle="--", linewidth=0.8)

    def per_broker(ax: Any, key: str, ylabel: str, heading: str, fmt: str = "%.0f") -> None:
        width = 0.8 / max(len(brokers), 1)
        for i, broker in enumerate(brokers):
            xs = [j + (i - (len(brokers) - 1) / 2) * width for j in range(len(modes))]
            ys = [value(_row(rows, m, broker), key) for m in modes]
            rects = ax.bar(
                xs,
                ys,
                width,
                label=broker,
                color=[colors[m] for m in modes],
                alpha=1.0 - 0.35 * i,
                edgecolor="black",
                linewidth=0.4,
                hatch="" if i == 0 else "//",
            )
            ax.bar_label(rects, fmt=fmt, fontsize=7)
        ax.set_xticks(range(len(modes)), modes)
        ax.set_ylabel(ylabel)
        ax.set_title(heading, fontsize=10)
        ax.legend(fontsize=7)

    per_broker(axes[1][0], "e2e_per_s", "node executions / s", "End to end through Celery")
    per_broker(axes[1][1], "e2e_p99_ms", "ms", "Enqueue-to-commit p99")
    per_broker(
        axes[1][2], "ratio_vs_ceiling", "fraction of ceiling", "Share of the ceiling", "%.2f"
    )
    for floor in (0.7, 0.6):
        axes[1][2].axhline(floor, color="black", linestyle="--", linewidth=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the blast -----------------------------------------------------------------------------------

BLAST_BATCH_TYPES = ("send_sms", "update_contact", "condition", "exit")
BLAST_MIN_PER_S = 2000.0
BLAST_MIN_RATIO = 5.0
BLAST_MAX_STATEMENTS_PER_BATCH = 2.0


def blast_row(broker: str, task_events: bool, result: Any, ceiling_per_s: float) -> Row:
    """One row per blast (bench.blast.BlastResult) and broker and task-events setting."""
    per_batch = {t: result.per_batch(result.statements, t) for t in BLAST_BATCH_TYPES}
    return {
        "mode": "blast",
        "broker": broker,
        "task_events": task_events,
        "contacts": result.contacts,
        "node_executions": result.executions,
        "seconds": result.seconds,
        "enroll_publish_seconds": result.enroll_seconds,
        "e2e_per_s": result.per_s,
        "ceiling_per_s": ceiling_per_s,
        "ratio_vs_ceiling": result.per_s / ceiling_per_s if ceiling_per_s else None,
        "statements_per_node": result.statements_per_execution,
        "db_roundtrips_per_node": result.roundtrips_per_execution,
        "statements_per_batch": per_batch,
        "statements_per_batch_median": {t: result.median_per_batch(t) for t in BLAST_BATCH_TYPES},
        "statements_per_batch_max": {t: result.max_per_batch(t) for t in BLAST_BATCH_TYPES},
        "commits_per_batch": {t: result.per_batch(result.commits, t) for t in BLAST_BATCH_TYPES},
        "publishes_per_batch": {
            t: result.per_batch(result.publishes, t) for t in BLAST_BATCH_TYPES
        },
        "batches": {t: result.tasks.get(t, 0) for t in BLAST_BATCH_TYPES},
        "task_ms_median": {
            t: result.service_ms(t)
            for t in (*BLAST_BATCH_TYPES, "journeys.enroll", "journeys.deliver_messages")
        },
        "task_sql_ms_median": {
            t: result.sql_ms(t)
            for t in (*BLAST_BATCH_TYPES, "journeys.enroll", "journeys.deliver_messages")
        },
        "children_busy_share": result.busy_seconds / (result.seconds * 2)
        if result.seconds
        else None,
        "mean_batch_contacts": result.mean_batch,
        "tasks": dict(result.tasks),
        "statements_per_enroll": result.per_batch(result.statements, "journeys.enroll"),
        "statements_per_delivery_batch": result.per_batch(
            result.statements, "journeys.deliver_messages"
        ),
        "worker_child_rss_kb_start": sorted(result.rss_start_kb.values()),
        "worker_child_rss_kb_end": sorted(result.rss_end_kb.values()),
        "worker_child_rss_growth_mb": result.rss_growth_mb,
        "exactly_once": not result.checks,
        "checks": list(result.checks),
    }


def blast_table(rows: Sequence[Row]) -> str:
    header = (
        f"{'broker':<9}{'events':<7}{'contacts':>9}{'node execs':>11}{'seconds':>9}"
        f"{'execs/s':>9}{'ceiling/s':>10}{'x ceil':>7}{'stmts/exec':>11}{'RT/exec':>8}"
        f"{'batch':>7}{'RSS +MB':>8}{'once':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["mode"] != "blast":
            continue
        lines.append(
            f"{r['broker']:<9}{'on' if r['task_events'] else 'off':<7}{r['contacts']:>9,}"
            f"{r['node_executions']:>11,}{r['seconds']:>9.2f}{_fmt(r['e2e_per_s'], '.0f'):>9}"
            f"{_fmt(r['ceiling_per_s'], '.0f'):>10}{_fmt(r['ratio_vs_ceiling'], '.2f'):>7}"
            f"{r['statements_per_node']:>11.4f}{r['db_roundtrips_per_node']:>8.4f}"
            f"{r['mean_batch_contacts']:>7.1f}{_fmt(r['worker_child_rss_growth_mb'], '.1f'):>8}"
            f"{'yes' if r['exactly_once'] else 'NO':>6}"
        )
    lines.append(
        "statements per batch task by node type: mean (median, max; commits, publishes) x tasks"
    )
    for r in rows:
        if r["mode"] != "blast":
            continue
        parts = ", ".join(
            f"{t} {_fmt(r['statements_per_batch'][t], '.2f')} "
            f"({_fmt(r['statements_per_batch_median'][t], '.0f')}, "
            f"{_fmt(r['statements_per_batch_max'][t], 'd')}; "
            f"{_fmt(r['commits_per_batch'][t], '.2f')}, "
            f"{_fmt(r['publishes_per_batch'][t], '.2f')}) x{r['batches'][t]}"
            for t in BLAST_BATCH_TYPES
        )
        events = "on" if r["task_events"] else "off"
        lines.append(f"  {r['broker']} events {events}: {parts}")
        lines.append(
            f"    enroll {_fmt(r['statements_per_enroll'], '.2f')} statements per task, "
            f"deliveries {_fmt(r['statements_per_delivery_batch'], '.2f')} per batch task; "
            f"worker CPU per node execution {_fmt(r.get('worker_cpu_ms_per_execution'), '.3f')}"
            " ms; "
            f"load {r.get('load_avg_1m_start')} -> {r.get('load_avg_1m_end')}"
        )
        lines.append(
            "    task time in the child, median ms (of it in SQL): "
            + ", ".join(
                f"{t} {_fmt(v, '.1f')} ({_fmt(r['task_sql_ms_median'][t], '.1f')})"
                for t, v in r["task_ms_median"].items()
            )
            + f"; children busy {_fmt(r['children_busy_share'], '.0%')} of the run"
        )
    return "\n".join(lines)


def blast_goals(rows: Sequence[Row]) -> list[tuple[str, bool | None, str]]:
    """Issue 9's goals, for each broker and task-events setting that ran."""
    results: list[tuple[str, bool | None, str]] = []
    for r in rows:
        if r["mode"] != "blast":
            continue
        where = f"{r['broker']}, events {'on' if r['task_events'] else 'off'}, {r['contacts']:,}"
        results.append(
            (
                f"blast >={BLAST_MIN_PER_S:,.0f} node executions/s ({where})",
                r["e2e_per_s"] >= BLAST_MIN_PER_S,
                f"{r['e2e_per_s']:.0f}/s ({r['node_executions']:,} in {r['seconds']:.2f}s)",
            )
        )
        ratio = r["ratio_vs_ceiling"]
        results.append(
            (
                f"blast >={BLAST_MIN_RATIO:.0f}x the no-op ceiling ({where})",
                ratio is not None and ratio >= BLAST_MIN_RATIO,
                f"{r['e2e_per_s']:.0f}/s vs ceiling {r['ceiling_per_s']:.0f}/s: {ratio:.2f}x"
                + (
                    f" (ceiling {r['ceiling_before_per_s']:.0f}/s before, "
                    f"{r['ceiling_after_per_s']:.0f}/s after)"
                    if r.get("ceiling_before_per_s") is not None
                    else ""
                ),
            )
        )
        medians = r["statements_per_batch_median"]
        worst = max((v for v in medians.values() if v is not None), default=0.0)
        results.append(
            (
                f"blast <=2 statements per batch ({where})",
                worst <= BLAST_MAX_STATEMENTS_PER_BATCH,
                "median (mean) per batch: "
                + ", ".join(
                    f"{t} {_fmt(v, '.0f')} ({_fmt(r['statements_per_batch'][t], '.2f')})"
                    for t, v in medians.items()
                ),
            )
        )
        results.append(
            (
                f"blast exactly once ({where})",
                r["exactly_once"],
                "; ".join(r["checks"]) or "one execution per step, one message per send, all SENT",
            )
        )
        growth = r["worker_child_rss_growth_mb"]
        results.append(
            (
                f"blast worker child RSS grows <50 MB ({where})",
                None if growth is None else growth < 50,
                f"{_fmt(growth, '.1f')} MB over {r['contacts']:,} contacts (largest child growth)",
            )
        )
    return results
