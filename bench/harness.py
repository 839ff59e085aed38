"""Benchmarks of Tasks Server: one markdown table of figures against their targets.

Run with `bench/run` (all scenarios, median of 3 runs) or
`bench/run --quick` (counts scaled down, one run) or `bench/run --only timing`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.baseline import curl_multi_rate
from bench.database import KINDS, Database
from bench.server import Server, wrk_get, wrk_register
from bench.target import Target

REGISTER_RATE_GUESS = 2500  # tasks/s, to plan due times after registration ends
FILL_RATE_GUESS = 5000  # tasks/s written straight through the store
BURST_MARGIN_S = 5.0  # for the server to start before the burst is due


@dataclass
class Figure:
    scenario: str
    name: str
    value: float
    unit: str
    target: str
    passed: Callable[[float], bool]


@dataclass
class Context:
    target: Target
    scale: int  # divide counts by this (1 = the counts)
    notes: list[str]
    database: str = "sqlite"  # the store every server runs on: sqlite or postgres

    def fresh(self) -> Database:
        return Database(self.database)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_arrivals(
    target: Target, prefix: str, count: int, timeout: float
) -> list[tuple[float, str, str, str]]:
    # poll cheaply (the harness shares the machine's cores with the server), parse once
    deadline = time.monotonic() + timeout
    while target.count(prefix) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return [row for row in target.arrivals() if row[1].startswith(prefix)]


def plan_due(count: int, margin_s: float = 2.0) -> int:
    return now_ms() + int((count / REGISTER_RATE_GUESS + margin_s) * 1000)


# ---- scenarios ----


CLUSTER_ENV = {"CLUSTER_MODE": "1", "MAX_INSTANCES": "2"}


def scenario_register(ctx: Context, label: str = "register", **env: str) -> list[Figure]:
    count = 20_000 // ctx.scale
    database = ctx.fresh()
    server = Server(database, **env).start()
    try:
        owner = server.owner()
        summary = wrk_register(server, owner, count, target=ctx.target.url(""), mode="register")
    finally:
        server.stop()
        database.close()
    seconds = summary["seconds"]
    if summary["status_errors"] or summary["socket_errors"]:
        ctx.notes.append(
            f"{label}: {summary['status_errors']} non-2xx, {summary['socket_errors']} socket errors"
        )
    return [
        Figure(
            label,
            f"{count} registrations, 64 clients",
            count / seconds,
            "tasks/s",
            ">= 4000",
            lambda v: v >= 4000,
        ),
        Figure(label, "p99 latency", summary["p99_us"] / 1000, "ms", "<= 50", lambda v: v <= 50),
    ]


def scenario_register_cluster(ctx: Context) -> list[Figure]:
    return scenario_register(ctx, "register, cluster of 2", **CLUSTER_ENV)


def due_at_once(
    ctx: Context,
    count: int,
    label: str,
    nodes: int = 1,
    finished: int = 0,
    pending: int = 0,
    **env: str,
) -> tuple[int, list[float]]:
    """`count` tasks due at one instant, dispatched by `nodes` servers on one database
    started before it, beside `finished` tasks of history: (the due time, the arrivals)."""
    # the tasks are written through the store before the server starts (the
    # rows the API writes), so the figure is the dispatch alone, not how fast
    # they could be registered
    ctx.target.reset()
    database = ctx.fresh()
    rows = count + finished + pending
    due = now_ms() + int((rows / FILL_RATE_GUESS + BURST_MARGIN_S) * 1000)
    fill(database, pending, count, ctx.target.url(""), due_at=due, finished=finished)
    servers = [Server(database, **env) for _ in range(nodes)]
    try:
        for server in servers:
            server.start()
        if now_ms() > due:
            ctx.notes.append(f"{label}: the servers were up after the due time (pessimistic)")
        rows = wait_arrivals(ctx.target, "/t/", count, timeout=(due - now_ms()) / 1000 + 60)
    finally:
        for server in servers:
            server.stop()
        database.close()
    if len(rows) < count:
        ctx.notes.append(f"{label}: only {len(rows)} of {count} arrived")
    return due, sorted(row[0] for row in rows)


def first_arrival(label: str, due: int, arrivals: list[float]) -> Figure:
    return Figure(
        label,
        "first arrival after the due time",
        arrivals[0] - due,
        "ms",
        "<= 10",
        lambda v: v <= 10,
    )


def scenario_burst(ctx: Context, label: str = "dispatch burst", **env: str) -> list[Figure]:
    count = 50_000 // ctx.scale
    due, arrivals = due_at_once(ctx, count, label, **env)
    last = arrivals[-1]
    rate = len(arrivals) / max(0.001, (last - due) / 1000)
    baseline = curl_multi_rate(ctx.target.url("/b/"), count, concurrency=1000)
    return [
        first_arrival(label, due, arrivals),
        Figure(
            label,
            f"{count} due at once: due to last arrival",
            rate,
            "tasks/s",
            ">= 10000",
            lambda v: v >= 10000,
        ),
        Figure(
            label,
            "bare libcurl baseline, same target",
            baseline,
            "req/s",
            "(reference)",
            lambda v: True,
        ),
        Figure(
            label,
            "ratio to baseline",
            rate / baseline,
            "x",
            ">= 0.5",
            lambda v: v >= 0.5,
        ),
    ]


def scenario_burst_cluster(ctx: Context) -> list[Figure]:
    return scenario_burst(ctx, "dispatch burst, cluster of 2", **CLUSTER_ENV)


def scenario_burst_start(ctx: Context) -> list[Figure]:
    # 1,000 whatever the scale (quick included: it is cheap); fewer only for the smoke test
    count = min(1000, max(1, 20_000 // ctx.scale))
    label = "burst start"
    due, arrivals = due_at_once(ctx, count, label)
    return [
        first_arrival(label, due, arrivals),
        Figure(
            label,
            f"{count} due at once: last arrival after the due time",
            arrivals[-1] - due,
            "ms",
            "<= 80",
            lambda v: v <= 80,
        ),
    ]


def _any(value: float) -> bool:
    return True


def burst_rate(due: int, arrivals: list[float]) -> float:
    return len(arrivals) / max(0.001, (arrivals[-1] - due) / 1000)


def scenario_history(ctx: Context) -> list[Figure]:
    """Claims read a partial index of pending rows: the finished ones beside cost nothing."""
    count, pending, finished = 20_000 // ctx.scale, 100_000 // ctx.scale, 1_000_000 // ctx.scale
    label = "burst beside history"
    due, plain = due_at_once(ctx, count, label)
    due_beside, beside = due_at_once(ctx, count, label, pending=pending, finished=finished)
    rate, rate_beside = burst_rate(due, plain), burst_rate(due_beside, beside)
    return [
        Figure(
            label, f"{count} due at once, alone", rate, "tasks/s", "(reference)", lambda v: True
        ),
        Figure(
            label,
            f"beside {finished} finished and {pending} pending",
            rate_beside,
            "tasks/s",
            "(reference)",
            lambda v: True,
        ),
        Figure(label, "ratio", rate_beside / rate, "x", ">= 0.8", lambda v: v >= 0.8),
    ]


def scenario_nodes(ctx: Context) -> list[Figure]:
    """The same burst dispatched by 1, 2 and 3 server processes on one database."""
    count = 50_000 // ctx.scale
    figures = []
    for nodes in (1, 2, 3):
        label = f"{nodes} node{'s' if nodes > 1 else ''} side by side"
        due, arrivals = due_at_once(ctx, count, label, nodes=nodes)
        figures.append(
            Figure(
                label,
                f"{count} due at once: due to last arrival",
                burst_rate(due, arrivals),
                "tasks/s",
                ">= 10000",
                lambda v: v >= 10000,
            )
        )
    return figures


def register_due_and_collect(
    ctx: Context, mode: str, count: int, spread: int, prefix: str, arrivals: int
) -> list[tuple[float, str, str, str]]:
    """Register `count` tasks due over `spread` ms after registration ends; their arrivals."""
    ctx.target.reset()
    database = ctx.fresh()
    server = Server(database).start()
    try:
        owner = server.owner()
        due = plan_due(count)
        target = ctx.target.url("")
        wrk_register(server, owner, count, target=target, mode=mode, due_base=due, spread_ms=spread)
        timeout = (due - now_ms()) / 1000 + spread / 1000 + 60
        return wait_arrivals(ctx.target, prefix, arrivals, timeout=timeout)
    finally:
        server.stop()
        database.close()


def scenario_timing(ctx: Context) -> list[Figure]:
    count = 10_000 // ctx.scale
    spread = 20_000 // min(ctx.scale, 4)
    rows = register_due_and_collect(ctx, "timing", count, spread, "/t/", count)
    lateness = [arrival - int(uri.split("/")[2]) for arrival, uri, _, _ in rows]
    return [
        Figure(
            "timing",
            f"{count} over {spread // 1000} s: lateness p50",
            percentile(lateness, 50),
            "ms",
            "<= 2",
            lambda v: v <= 2,
        ),
        Figure(
            "timing", "lateness p99", percentile(lateness, 99), "ms", "<= 10", lambda v: v <= 10
        ),
        Figure("timing", "lateness max", max(lateness), "ms", "<= 50", lambda v: v <= 50),
    ]


def scenario_retry(ctx: Context) -> list[Figure]:
    count = 10_000 // ctx.scale
    spread = 10_000 // min(ctx.scale, 4)
    rows = register_due_and_collect(ctx, "retry", count, spread, "/fail/", count * 4)
    lateness = [
        arrival - int(planned) for arrival, _, retry, planned in rows if retry not in ("-", "")
    ]
    return [
        Figure(
            "retry storm",
            f"{count} tasks x 3 failures, 100 ms apart: retry lateness p99",
            percentile(lateness, 99),
            "ms",
            "<= 20",
            lambda v: v <= 20,
        ),
    ]


def fill(
    database: Database,
    pending: int,
    overdue: int,
    target: str,
    due_at: int | None = None,
    finished: int = 0,
) -> dict[str, str]:
    """Write tasks straight through the store (same rows as the API writes)."""
    from bench.fill import fill_database

    return asyncio.run(fill_database(database, pending, overdue, target, due_at, finished))


def scenario_scale(ctx: Context) -> list[Figure]:
    sizes = (0, 100_000 // ctx.scale, 1_000_000 // ctx.scale)
    rss: dict[int, float] = {}
    per_task = 0.0
    for size in sizes:
        database = ctx.fresh()
        fill(database, size, 0, ctx.target.url(""))
        if size == sizes[-1]:
            per_task = database.bytes_per_task(size)
        server = Server(database).start()
        try:
            time.sleep(2)
            rss[size] = server.rss_mb()
        finally:
            server.stop()
            database.close()
    return [
        Figure("scale", "RSS with 0 pending", rss[sizes[0]], "MB", "(reference)", lambda v: True),
        Figure(
            "scale",
            f"RSS with {sizes[1]} pending",
            rss[sizes[1]],
            "MB",
            "(reference)",
            lambda v: True,
        ),
        Figure(
            "scale",
            f"RSS with {sizes[2]} pending",
            rss[sizes[2]],
            "MB",
            "<= 150",
            lambda v: v <= 150,
        ),
        Figure(
            "scale",
            f"RSS growth {sizes[1]} -> {sizes[2]}",
            rss[sizes[2]] - rss[sizes[1]],
            "MB",
            "<= 20",
            lambda v: v <= 20,
        ),
        Figure(
            "disk",
            "database bytes per pending task (300-byte body)",
            per_task,
            "bytes",
            "<= 1536",
            lambda v: v <= 1536,
        ),
    ]


def scenario_startup(ctx: Context) -> list[Figure]:
    pending, overdue = 1_000_000 // ctx.scale, 10_000 // ctx.scale
    database = ctx.fresh()
    fill(database, pending, overdue, ctx.target.url(""))
    ctx.target.reset()
    server = Server(database)
    try:
        server.start()
        started = server.started_at * 1000
        rows = wait_arrivals(ctx.target, "/t/", overdue, timeout=60)
    finally:
        server.stop()
        database.close()
    times = sorted(row[0] for row in rows)
    return [
        Figure(
            "start-up",
            f"{pending} pending, {overdue} overdue: start to first arrival",
            (times[0] - started) / 1000,
            "s",
            "<= 2",
            lambda v: v <= 2,
        ),
        Figure(
            "start-up",
            f"start to all {overdue} overdue delivered",
            (times[-1] - started) / 1000,
            "s",
            "<= 3",
            lambda v: v <= 3,
        ),
    ]


def scenario_list(ctx: Context) -> list[Figure]:
    stored = 1_000_000 // ctx.scale
    database = ctx.fresh()
    owner = fill(database, stored, 0, ctx.target.url(""))
    server = Server(database).start()
    try:
        result = wrk_get(server, owner, "/v1/queues?state=RUNNING&limit=100", seconds=5)
    finally:
        server.stop()
        database.close()
    return [
        Figure(
            "list",
            f"GET ?state=RUNNING&limit=100 with {stored} stored: p99",
            result["p99_us"] / 1000,
            "ms",
            "<= 20",
            lambda v: v <= 20,
        ),
    ]


SCENARIOS: dict[str, Callable[[Context], list[Figure]]] = {
    "register": scenario_register,
    "register-cluster": scenario_register_cluster,
    "burst": scenario_burst,
    "burst-cluster": scenario_burst_cluster,
    "burst-start": scenario_burst_start,
    "nodes": scenario_nodes,
    "history": scenario_history,
    "timing": scenario_timing,
    "retry": scenario_retry,
    "scale": scenario_scale,
    "startup": scenario_startup,
    "list": scenario_list,
}


def median_figures(runs: list[list[Figure]]) -> list[Figure]:
    merged = []
    for figures in zip(*runs, strict=True):
        first = figures[0]
        value = statistics.median(f.value for f in figures)
        merged.append(
            Figure(first.scenario, first.name, value, first.unit, first.target, first.passed)
        )
    return merged


def render(figures: list[Figure], ctx: Context, runs: int) -> str:
    lines = [
        f"Target: {ctx.target.kind}. Database: {ctx.database}. "
        f"Figures are the median of {runs} run(s)"
        + (f", counts divided by {ctx.scale}" if ctx.scale > 1 else "")
        + ".",
        "",
        "| scenario | figure | value | unit | target | pass |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        digits = 2 if abs(f.value) < 10 else 1 if abs(f.value) < 100 else 0
        value = f"{round(f.value, digits) + 0.0:,.{digits}f}"  # + 0.0: never "-0.00"
        verdict = "pass" if f.passed(f.value) else "FAIL"
        lines.append(f"| {f.scenario} | {f.name} | {value} | {f.unit} | {f.target} | {verdict} |")
    if ctx.notes:
        lines += ["", *[f"- {note}" for note in ctx.notes]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="counts / 20 and one run (CI smoke)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable)",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per scenario (default 3, quick 1)"
    )
    parser.add_argument("--scale", type=int, default=None, help="divide counts by this (quick: 20)")
    parser.add_argument(
        "--database",
        choices=KINDS,
        default="sqlite",
        help="the store every server runs on (postgres: BENCH_POSTGRES, a database per run)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True)
    if shutil.which("wrk") is None:
        print("bench needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    runs = args.runs or (1 if args.quick else 3)
    scale = args.scale or (20 if args.quick else 1)
    ctx = Context(Target(), scale, [], args.database)
    try:
        figures: list[Figure] = []
        for name in args.only or list(SCENARIOS):
            print(f"running {name} ...", file=sys.stderr, flush=True)
            figures += median_figures([SCENARIOS[name](ctx) for _ in range(runs)])
        print(render(figures, ctx, runs))
    finally:
        ctx.target.stop()
    return 0 if all(f.passed(f.value) for f in figures) or scale > 1 else 1


if __name__ == "__main__":
    sys.exit(main())
