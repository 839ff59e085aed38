"""Prometheus figures: what the observer hooks report as it happens (counters, histograms),
and what the database says at the moment of a scrape (gauges).

In CLUSTER_MODE each worker writes its figures to files in PROMETHEUS_MULTIPROC_DIR (set
by the supervisor before it starts them) and a scrape on any worker reads them all. On
PostgreSQL each node reports its own process figures; the database gauges are the same
on every node. Labels are bounded: never a task id, an owner or a URL.
"""

from __future__ import annotations

import bisect
import os
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tasks_server.store.base import StoreFigures

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# seconds: a dispatch is on time within milliseconds; retries wait minutes
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


ACTIVITY_MINUTES = 60  # the dashboard's charts: the last hour, a point a minute


class Minute:
    """What this process did in one minute."""

    __slots__ = ("backlog", "failed", "lateness", "start_ms", "succeeded")

    def __init__(self, start_ms: int) -> None:
        self.start_ms = start_ms
        self.succeeded = 0
        self.failed = 0
        self.lateness = [0] * (len(LATENESS_BUCKETS) + 1)  # counts per bucket, +Inf last
        self.backlog = 0  # the largest due backlog seen in the minute

    def lateness_quantile(self, q: float) -> float | None:
        """The upper bound (s) of the bucket holding the q-quantile; None without attempts."""
        total = sum(self.lateness)
        if not total:
            return None
        seen = 0
        for index, count in enumerate(self.lateness):
            seen += count
            if seen >= q * total:
                return LATENESS_BUCKETS[index] if index < len(LATENESS_BUCKETS) else None
        return None


class Activity:
    """The last hour of this process, a point a minute, for the dashboard's charts (the
    same figures Prometheus gets, kept short and in memory)."""

    def __init__(self, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self._now_ms = now_ms
        self._minutes: deque[Minute] = deque(maxlen=ACTIVITY_MINUTES)

    def current(self) -> Minute:
        start = self._now_ms() // 60_000 * 60_000
        if not self._minutes or self._minutes[-1].start_ms != start:
            self._minutes.append(Minute(start))
        return self._minutes[-1]

    def minutes(self) -> list[Minute]:
        self.current()
        return list(self._minutes)


def status_class(status_code: int) -> str:
    """`2xx` ... `5xx`, or `none` when no HTTP answer came."""
    return f"{status_code // 100}xx" if 100 <= status_code < 600 else "none"


class Metrics:
    """The Observer that feeds Prometheus, and the text of a scrape."""

    def __init__(self) -> None:
        self.activity = Activity()
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))
        self.registry = CollectorRegistry()
        registry = self.registry
        self._registered = Counter(
            "tasks_registered", "Tasks registered through the API", registry=registry
        )
        self._attempts = Counter(
            "tasks_attempts",
            "Attempts that ended, by outcome and HTTP status class (none: no HTTP answer)",
            ["outcome", "status_class"],
            registry=registry,
        )
        self._lateness = Histogram(
            "tasks_dispatch_lateness_seconds",
            "From an attempt's due time to its request handed to libcurl",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self._attempt_counters: dict[tuple[bool, int], Counter] = {}
        self._duration = Histogram(
            "tasks_attempt_duration_seconds",
            "From an attempt's start to its end",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._commit = Histogram(
            "store_commit_seconds",
            "One commit of registrations or outcomes",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self._group = Histogram(
            "store_group_size",
            "Writes in one durable commit (a registration, a change, a batch of outcomes)",
            buckets=GROUP_BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            "tasks_in_flight",
            "Attempts on the wire",
            registry=registry,
            multiprocess_mode="livesum",
        )

    # ---- the Observer ----

    def tasks_registered(self, count: int) -> None:
        self._registered.inc(count)

    def attempt_started(self, lateness_s: float) -> None:
        self._lateness.observe(lateness_s)
        self.activity.current().lateness[bisect.bisect_left(LATENESS_BUCKETS, lateness_s)] += 1

    def attempt_finished(self, succeeded: bool, status_code: int, duration_s: float) -> None:
        key = (succeeded, status_code // 100 if 100 <= status_code < 600 else 0)
        counter = self._attempt_counters.get(key)
        if counter is None:  # once per outcome and status class: labels() takes a lock
            outcome = "success" if succeeded else "failure"
            counter = self._attempts.labels(outcome, status_class(status_code))
            self._attempt_counters[key] = counter
        counter.inc()
        self._duration.observe(duration_s)
        minute = self.activity.current()
        if succeeded:
            minute.succeeded += 1
        else:
            minute.failed += 1

    def backlog_seen(self, due_backlog: int) -> None:
        """The due backlog as the database said it now (sampled for the charts)."""
        minute = self.activity.current()
        minute.backlog = max(minute.backlog, due_backlog)

    def attempts_in_flight(self, count: int) -> None:
        self._in_flight.set(count)

    def store_committed(self, seconds: float, group_size: int) -> None:
        self._commit.observe(seconds)
        self._group.observe(group_size)

    # ---- a scrape ----

    def render(self, figures: StoreFigures, instances_alive: int, now_ms: int) -> bytes:
        """The exposition text: every process's figures and the database's."""
        processes = self.registry
        if self.multiprocess:
            processes = CollectorRegistry()
            MultiProcessCollector(processes)  # type: ignore[no-untyped-call]
        database = CollectorRegistry()
        database.register(_DatabaseFigures(figures, instances_alive, now_ms))
        return generate_latest(processes) + generate_latest(database)


class _DatabaseFigures(Collector):
    """The gauges the database gives at the moment of a scrape."""

    def __init__(self, figures: StoreFigures, instances_alive: int, now_ms: int) -> None:
        self._figures = figures
        self._instances_alive = instances_alive
        self._now_ms = now_ms

    def collect(self) -> list[Metric]:
        figures = self._figures
        tasks = GaugeMetricFamily("tasks", "Tasks stored, by state", labels=["state"])
        for state, count in figures.tasks.items():
            tasks.add_metric([state.value], count)
        oldest = 0.0
        if figures.oldest_due_at is not None:
            oldest = max(0.0, (self._now_ms - figures.oldest_due_at) / 1000)
        found: list[Metric] = [
            tasks,
            GaugeMetricFamily(
                "tasks_due_backlog", "Tasks due and not started", value=figures.due_backlog
            ),
            GaugeMetricFamily(
                "tasks_oldest_due_age_seconds",
                "How long the longest waiting due task has waited (0: none waits)",
                value=oldest,
            ),
            GaugeMetricFamily(
                "instances_alive",
                "Server processes heart-beating in the database",
                value=self._instances_alive,
            ),
        ]
        if figures.last_backup_at is not None:
            found.append(
                GaugeMetricFamily(
                    "backup_last_success_timestamp_seconds",
                    "When the last scheduled backup that succeeded finished",
                    value=figures.last_backup_at / 1000,
                )
            )
        return found
