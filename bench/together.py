"""Three customers importing big files at once (SPEC 15: several customers' big files share the workers evenly).

Three customers of the bench's customer map, each with its own fresh database, get the same users
CSV (the first two thirds of the bench's file) appended at the same moment: three enqueues back to
back. Each job's rate is its rows_total over the time from its enqueue to its end (created_at ->
finished_at, both stamped by Postgres). The jobs are polled meanwhile for when each was seen
started, with a chunk done, and ended: they ran side by side if every one had a chunk done
before any of them ended. (With a small ROWS a job has fewer chunks than it may have in flight,
all of them run at once and finish together: then only "all had started" can be said.) Every job must succeed with the right counts, and each customer's table
hold exactly that job's valid rows; a max/min rate ratio over 2 is reported, not an error.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.data import COUNTS, Files, prepare_head
from service.stages.enqueue import EnqueueRequest, enqueue
from service.storage.jobs import Job

if TYPE_CHECKING:
    from bench.runs import Session

CUSTOMERS = ("multi_a", "multi_b", "multi_c")  # in the bench's customer map, each with its own database
SHARE = (2, 3)  # each gets the first 2/3 of the bench's rows: twice the big append's rows in all, 10-20 s at 1M
POLL_SECONDS = 0.05
LABEL = f"{len(CUSTOMERS)} customers at once"
EVEN = 2.0  # SPEC 15 / the issue: each customer's rows/s within 2x of the others'


@dataclass
class One:
    """One customer's job: rows, seconds from its enqueue to its end (Postgres clock), and when (seconds after
    the first enqueue, as polled) it was first seen started, with a chunk done, and ended."""

    customer: str
    rows: int
    seconds: float
    started: float
    first_chunk: float
    ended: float

    @property
    def rate(self) -> float:
        """Rows per second, enqueue to end."""
        return self.rows / self.seconds


@dataclass
class Together:
    """The jobs, in the order they were enqueued."""

    jobs: list[One]

    @property
    def ratio(self) -> float:
        """Fastest rate over the slowest."""
        rates = [one.rate for one in self.jobs]
        return max(rates) / min(rates)

    @property
    def side_by_side(self) -> bool:
        """Every job had a chunk done before any of them ended."""
        return max(one.first_chunk for one in self.jobs) < min(one.ended for one in self.jobs)

    @property
    def all_started(self) -> bool:
        """Every job had started before any of them ended."""
        return max(one.started for one in self.jobs) < min(one.ended for one in self.jobs)


def place(source: Path, folder: Path) -> Path:
    """The file in another customer's blob area (a hard link, else a copy), made anew each run."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def run(session: Session, files: Files) -> Together:
    """Enqueue the file for every customer back to back, wait for all, check each; the figures."""
    rows = max(files.rows * SHARE[0] // SHARE[1], 1)
    first, valid = prepare_head(session.blob_root / CUSTOMERS[0], rows, files.invalid_ratio)
    paths = [first, *(place(first, session.blob_root / customer) for customer in CUSTOMERS[1:])]
    started = time.perf_counter()
    ids = [
        enqueue(EnqueueRequest(customer, "users", path.as_uri(), {}), session.jobs)[0].id
        for customer, path in zip(CUSTOMERS, paths, strict=True)
    ]
    began: dict[str, float] = {}
    first_chunk: dict[str, float] = {}
    ended: dict[str, float] = {}
    final: dict[str, Job] = {}
    while len(final) < len(ids):
        time.sleep(POLL_SECONDS)
        now = session.jobs_now(ids, started)
        seen = time.perf_counter() - started
        for job_id, job in now.items():
            if job.started_at is not None or job.finished:
                began.setdefault(job_id, seen)
            if job.chunks_done > 0 or job.finished:
                first_chunk.setdefault(job_id, seen)
            if job.finished and job_id not in final:
                ended[job_id], final[job_id] = seen, job
    expect = {"rows_inserted": valid, "rows_invalid": rows - valid}
    result = []
    for customer, job_id in zip(CUSTOMERS, ids, strict=True):
        job = final[job_id]
        check(session, job, customer, rows, expect)
        assert job.finished_at is not None
        seconds = (job.finished_at - job.created_at).total_seconds()
        result.append(One(customer, job.rows_total, seconds, began[job_id], first_chunk[job_id], ended[job_id]))
    return Together(result)


def check(session: Session, job: Job, customer: str, rows: int, expect: dict[str, int]) -> None:
    """The job succeeded with the expected counts, and its customer's table holds exactly its valid rows."""
    label = f"{LABEL}, customer {customer}"
    if job.status != "succeeded":
        raise session.failure(job, label, f"the job ended {job.status}")
    wrong = [
        f"{name} is {getattr(job, name):,}, must be {expect.get(name, 0):,}"
        for name in ("rows_total", *COUNTS)
        if getattr(job, name) != (rows if name == "rows_total" else expect.get(name, 0))
    ]
    if wrong:
        raise session.failure(job, label, "wrong counts: " + "; ".join(wrong))
    total, held = session.table_rows(job.id, session.others[customer])
    if total != expect["rows_inserted"] or held != total:
        raise session.failure(
            job,
            label,
            f"the customer's table holds {total:,} rows, {held:,} of the job; must be {expect['rows_inserted']:,}",
        )


def report_lines(result: Together | None, width: int) -> list[str]:
    """The table's line: each customer's rows/s, how even, whether they ran side by side."""
    if result is None:
        return []
    jobs = result.jobs
    rates = " / ".join(f"{one.rate:,.0f}" for one in jobs)
    even = f"max/min {result.ratio:.2f}" + ("" if result.ratio <= EVEN else f", over {EVEN:g}x")
    seconds = " / ".join(f"{one.seconds:.1f}" for one in jobs)
    first_end = min(jobs, key=lambda one: one.ended)
    last_chunk = max(jobs, key=lambda one: one.first_chunk)
    chunks = " / ".join(f"{one.first_chunk:.1f}" for one in jobs)
    if result.side_by_side:
        overlap = f"side by side: first chunks done at {chunks} s, before the first end at {first_end.ended:.1f} s"
    else:
        overlap = (
            f"NOT side by side: first chunks done at {chunks} s, but {first_end.customer} ended at "
            f"{first_end.ended:.1f} s, before {last_chunk.customer} had a chunk done"
        )
        started = max(one.started for one in jobs)
        if result.all_started:
            overlap += f"; all had started by {started:.1f} s"
        else:
            overlap += f"; the last one started only at {started:.1f} s"
    return [
        f"{LABEL:<{width}}{rates} rows/s ({even}; {jobs[0].rows:,} rows each, done in {seconds} s; {overlap})",
    ]
