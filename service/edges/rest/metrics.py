"""GET /metrics (SPEC 16): Prometheus text from prometheus_client.

Two sources:
- HTTP requests, counted by a falcon middleware in each REST process. Under gunicorn they are
  kept in prometheus_client's multiprocess files (gunicorn.conf.py sets
  PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client), so every gunicorn
  worker's requests count whichever worker answers the scrape.
- Jobs, rows, durations and queues, read from the app DB at each scrape: finished jobs are
  counted by a trigger in the transaction that ends each job (migration 0006), so the jobs of
  every worker machine count exactly once and a restart loses nothing; queue depth and the
  oldest message's age come from dramatiq-pg's table.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import falcon
import psycopg2
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from service.edges.api import Unauthenticated
from service.logs import describe
from service.storage.jobs import JobStore
from service.storage.queue import QUEUES, delay_queue

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Upper bounds (seconds) of the job-duration buckets, +Inf after them; migration 0006's
# trigger sorts durations into the same ones.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
OUTCOMES = ("valid", "invalid", "inserted", "updated", "unchanged", "duplicate", "deleted")
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess files, when this process has one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


class HttpMetrics:
    """Falcon middleware: count each answered request by route template, method and status,
    and time it by route and method. An unknown path counts as route `unmatched` (the path
    itself would let clients grow the label set without bound)."""

    def __init__(self) -> None:
        # Outside gunicorn (tests, tools) the counters live in their own registry, not the
        # global one, so that several apps in one process do not clash.
        # Under gunicorn they are registered nowhere: their values go to the multiprocess files.
        self.registry = None if multiprocess_dir() else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "import_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "import_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        route = req.uri_template or "unmatched"
        method = req.method if req.method in _METHODS else "other"
        self.requests.labels(route, method, str(resp.status_code)).inc()
        started = getattr(req.context, "metrics_started", None)
        if started is not None:
            self.seconds.labels(route, method).observe(time.perf_counter() - started)


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class _Registered(Collector):
    """The metrics of another registry, as one collector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


class AppDbMetrics(Collector):
    """Jobs, rows, durations, unfinished jobs and queues, read from the app DB when scraped.
    If the app DB does not answer, import_app_db_up is 0 and the rest is left out."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("import_app_db_up", "1 when the app DB answered this scrape, else 0.")
        try:
            with self.jobs.transaction() as cur:
                cur.execute("SET LOCAL statement_timeout = 5000")
                cur.execute(_ENDED)
                ended = cur.fetchall()
                cur.execute(_UNFINISHED)
                unfinished = cur.fetchall()
                cur.execute(_WAITING)
                waiting_chunks = cur.fetchall()
                cur.execute(_QUEUES)
                queues = cur.fetchall()
                cur.execute(_FEEDS)
                feeds = cur.fetchall()
        except psycopg2.Error as exc:
            log.warning("GET /metrics: the app database is unavailable: %s", describe(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _job_families(ended)
        waiting = GaugeMetricFamily(
            "import_jobs_unfinished", "Jobs not finished yet, by product and status.", labels=["product", "status"]
        )
        for row in unfinished:
            waiting.add_metric([row["product_type"], row["status"]], row["jobs"])
        yield waiting
        turns = GaugeMetricFamily(
            "import_chunks_waiting",
            "Chunks of running jobs planned but not yet sent to the queue: they wait for their "
            "customer's turn (chunks_in_flight), so this, not the queue, is the backlog of big files.",
            labels=["product"],
        )
        for row in waiting_chunks:
            turns.add_metric([row["product_type"]], row["chunks"])
        yield turns
        depth = GaugeMetricFamily(
            "import_queue_messages",
            "Messages in the Dramatiq queue table, by queue and state (queued: waiting; consumed: taken "
            "by a worker; a queue ending in .DQ holds delayed messages).",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "import_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting (state queued) in each queue, from its enqueue time.",
            labels=["queue"],
        )
        for name, state, messages, age in _queue_samples(queues):
            depth.add_metric([name, state], messages)
            if state == "queued":
                oldest.add_metric([name], age)
        yield depth
        yield oldest
        yield from _feed_families(feeds)


QUEUE_STATES = ("queued", "consumed")


def _queue_samples(rows: list[dict[str, Any]]) -> list[tuple[str, str, int, float]]:
    """(queue, state, messages, oldest age) for every queue the service declares and its delay
    queue, 0 when empty, so that alerts and dashboards never see a gap (SPEC 16); a queue found
    in the table that the service does not declare is shown too."""
    found = {(row["queue_name"], row["state"]): row for row in rows}
    names = {q for queue in QUEUES for q in (queue, delay_queue(queue))} | {row["queue_name"] for row in rows}
    samples = []
    for name in sorted(names):
        for state in QUEUE_STATES:
            row = found.get((name, state))
            messages = int(row["messages"]) if row else 0
            age = max(0.0, float(row["oldest_age"] or 0.0)) if row else 0.0
            samples.append((name, state, messages, age))
    return samples


def _job_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    ends = CounterMetricFamily(
        "import_jobs_finished", "Jobs that reached a final status, by product and status.", labels=["product", "status"]
    )
    outcomes = CounterMetricFamily(
        "import_rows",
        "Rows of finished jobs by product and outcome (valid, invalid, inserted, updated, unchanged, "
        "duplicate, deleted), counted when the job ends.",
        labels=["product", "outcome"],
    )
    durations = HistogramMetricFamily(
        "import_job_duration_seconds",
        "Time from enqueue to the end of each finished job (an undo is not timed), by product and status.",
        labels=["product", "status"],
    )
    totals: dict[tuple[str, str], int] = {}
    for row in rows:
        product, status = row["product_type"], row["status"]
        ends.add_metric([product, status], row["jobs"])
        for outcome in OUTCOMES:
            key = (product, outcome)
            totals[key] = totals.get(key, 0) + row[f"rows_{outcome}"]
        if status == "undone":
            continue
        counts, running, buckets = row["duration_counts"], 0, []
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else str(float(bound)), running))
        durations.add_metric([product, status], buckets, sum_value=row["duration_sum"])
    for (product, outcome), value in sorted(totals.items()):
        outcomes.add_metric([product, outcome], value)
    yield ends
    yield outcomes
    yield durations


def _feed_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    """Per feed (SPEC 20): its files seen, enqueued, succeeded and failed, the age of the newest
    file it imported, and whether it is late."""
    labels = ["feed", "customer"]
    counters = {
        name: CounterMetricFamily(f"import_feed_files_{name}", text, labels=labels)
        for name, text in (
            ("seen", "File versions a feed has seen (each once), by feed."),
            ("enqueued", "File versions a feed enqueued a job for, by feed."),
            ("succeeded", "File versions whose job succeeded, by feed."),
            ("failed", "File versions whose job failed or was cancelled, or that were refused at enqueue, by feed."),
        )
    }
    newest = GaugeMetricFamily(
        "import_feed_newest_import_age_seconds",
        "Seconds since the newest file a feed imported finished its import (absent before the first).",
        labels=labels,
    )
    late = GaugeMetricFamily(
        "import_feed_late",
        "1 while a feed has found no new file for its expect_every_hours, else 0.",
        labels=labels,
    )
    for row in rows:
        key = [row["feed"], row["customer_id"]]
        for name, family in counters.items():
            family.add_metric(key, row[name])
        if row["newest_age"] is not None:
            newest.add_metric(key, max(0.0, float(row["newest_age"])))
        late.add_metric(key, 1 if row["late"] else 0)
    yield from counters.values()
    yield newest
    yield late


_ENDED = "SELECT * FROM import_job_metrics ORDER BY product_type, status"
_FEEDS = """
SELECT d.id::text AS feed, d.customer_id, d.late,
       count(f.version_id) AS seen,
       count(f.job_id) AS enqueued,
       count(*) FILTER (WHERE j.status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE j.status IN ('failed', 'cancelled') OR (f.version_id IS NOT NULL AND f.job_id IS NULL))
           AS failed,
       extract(epoch FROM now() - max(j.finished_at) FILTER (WHERE j.status = 'succeeded')) AS newest_age
FROM import_feeds d
LEFT JOIN import_feed_files f ON f.feed_id = d.id
LEFT JOIN import_jobs j ON j.id = f.job_id
GROUP BY d.id, d.customer_id, d.late ORDER BY 1
"""
_UNFINISHED = (
    "SELECT product_type, status, count(*) AS jobs FROM import_jobs WHERE status IN ('queued', 'running') "
    "GROUP BY product_type, status ORDER BY 1, 2"
)
_WAITING = (
    "SELECT j.product_type, count(*) AS chunks FROM import_chunks c JOIN import_jobs j ON j.id = c.job_id "
    "WHERE NOT c.sent AND j.status = 'running' GROUP BY j.product_type ORDER BY 1"
)
# Rows already done or rejected are history; message_timestamp is the enqueue time (ms).
_QUEUES = """
SELECT queue_name, state::text AS state, count(*) AS messages,
       extract(epoch FROM now()) - min((message->>'message_timestamp')::bigint) / 1000.0 AS oldest_age
FROM dramatiq.queue WHERE state IN ('queued', 'consumed')
GROUP BY queue_name, state ORDER BY 1, 2
"""


class MetricsResource:
    """GET /metrics: Prometheus text; public unless metrics_token is set, then that token only."""

    public = True

    def __init__(self, http: HttpMetrics, jobs: JobStore, token: str | None) -> None:
        self.http, self.jobs, self.token = http, jobs, token

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The metrics of every REST process (HTTP) and of the app DB (jobs, rows, queues)."""
        if self.token is not None:
            given = req.get_header("Authorization") or ""
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
                raise Unauthenticated("GET /metrics needs Authorization: Bearer <metrics_token>")
        registry = CollectorRegistry(auto_describe=False)
        directory = multiprocess_dir()
        if directory:
            MultiProcessCollector(registry, path=directory)
        elif self.http.registry is not None:
            registry.register(_Registered(self.http.registry))
        registry.register(AppDbMetrics(self.jobs))
        resp.content_type = CONTENT_TYPE
        resp.data = generate_latest(registry)
