"""Cancel of a running streaming append job (SPEC 13), with real workers writing its rows: a
reader polling the job's status and then the table never sees it `cancelled` while rows of it
are left, whether the cancel request deletes them or the worker it sends does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg2
import pytest

from service.stages import control
from service.stages.services import DISCARD, Services
from tests.conftest import Databases, query, until
from tests.integration.conftest import Pipeline, make_pipeline

ROWS = 100_000
HEADER = "external_id,email,first_name,last_name,role,age,active,created_at\n"


@pytest.fixture(scope="module")
def pipeline(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from make_pipeline(databases, tmp_path_factory, ["n1", "n2"], overrides={"chunk_rows": 2000})


@pytest.fixture(scope="module")
def services(pipeline: Pipeline) -> Services:
    return Services(pipeline.config, pipeline.jobs, pipeline.products, pipeline.app_dsn)


def big_csv() -> bytes:
    lines = (f"u{i},user{i}@example.com,Ann,Lee,student,{i % 90},yes,2024-03-01T09:30:00Z\n" for i in range(ROWS))
    return (HEADER + "".join(lines)).encode()


@dataclass
class Reader:
    """Reads the job's status, then counts its rows, again and again, on connections of its own."""

    app_dsn: str
    customer_dsn: str
    job_id: str
    samples: list[tuple[str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        app, customer = psycopg2.connect(self.app_dsn), psycopg2.connect(self.customer_dsn)
        app.autocommit = customer.autocommit = True
        try:
            with app.cursor() as jobs, customer.cursor() as rows:
                while not self.stop.is_set():
                    jobs.execute("SELECT status FROM import_jobs WHERE id = %s", (self.job_id,))
                    status = jobs.fetchone()[0]
                    rows.execute("SELECT count(*) FROM users WHERE job_id = %s", (self.job_id,))
                    self.samples.append((status, rows.fetchone()[0]))
        finally:
            app.close()
            customer.close()

    def seen_cancelled_with_rows(self) -> list[tuple[str, int]]:
        return [(status, count) for status, count in self.samples if status == "cancelled" and count]


def rows_of(pipeline: Pipeline, customer: str, job_id: str) -> int:
    dsn = pipeline.customer_dsns[customer]
    if not query(dsn, "SELECT to_regclass('users') IS NOT NULL")[0][0]:
        return 0  # the job's fetch has not made the table yet
    return int(query(dsn, "SELECT count(*) FROM users WHERE job_id = %s", (job_id,))[0][0])


def running_with_rows(pipeline: Pipeline, customer: str) -> str:
    """A big append job whose workers have committed some of its rows, and are writing more."""
    path = pipeline.put(customer, "big.csv", big_csv())
    job = pipeline.enqueue(customer, "users", path)
    until(lambda: rows_of(pipeline, customer, job.id) >= 4000, timeout=60)
    assert pipeline.jobs.status(job.id) == "running"
    return job.id


def watching(pipeline: Pipeline, customer: str, job_id: str) -> tuple[Reader, threading.Thread]:
    reader = Reader(pipeline.app_dsn, pipeline.customer_dsns[customer], job_id)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    until(lambda: len(reader.samples) > 0, timeout=10)
    return reader, thread


def test_a_cancelled_append_job_reads_cancelled_only_once_its_rows_are_gone(
    pipeline: Pipeline, services: Services
) -> None:
    job_id = running_with_rows(pipeline, "n1")
    reader, thread = watching(pipeline, "n1", job_id)
    job, complete = control.cancel(services, pipeline.jobs.get(job_id))
    assert complete and job.status == "cancelled"
    assert rows_of(pipeline, "n1", job_id) == 0
    time.sleep(3)  # chunks that were in flight end meanwhile: they must not bring rows back
    reader.stop.set()
    thread.join()
    assert rows_of(pipeline, "n1", job_id) == 0
    assert reader.seen_cancelled_with_rows() == []
    assert reader.samples[0][0] == "running" and reader.samples[0][1] > 0  # rows were there before
    assert any(status == "cancelled" for status, _ in reader.samples)


def test_a_cancel_a_worker_completes_keeps_the_job_running_until_its_rows_are_gone(pipeline: Pipeline) -> None:
    job_id = running_with_rows(pipeline, "n2")
    reader, thread = watching(pipeline, "n2", job_id)
    # The request alone, as when the customer database could not be reached from the edge.
    asked = time.monotonic()
    assert pipeline.jobs.cancel(job_id, DISCARD) == "requested"
    until(lambda: pipeline.jobs.status(job_id) == "cancelled", timeout=10)  # SPEC 13: within 10 s
    ended = time.monotonic() - asked
    time.sleep(3)
    reader.stop.set()
    thread.join()
    assert rows_of(pipeline, "n2", job_id) == 0
    assert reader.seen_cancelled_with_rows() == []
    assert any(status == "running" and count for status, count in reader.samples), "no rows before the cancel"
    print(f"cancel completed by a worker in {ended:.2f} s; {len(reader.samples)} reads")
