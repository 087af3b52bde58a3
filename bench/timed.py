"""One timed import of the bench: enqueue a file in-process, poll the job to its end, check its counts.

Shared by the runs of bench/runs.py and the twins of bench/twins.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.data import COUNTS
from service.stages.enqueue import EnqueueRequest, enqueue
from service.storage.jobs import Job

if TYPE_CHECKING:
    from bench.runs import Session

POLL_SECONDS = 0.05


@dataclass
class Run:
    """One timed run: rows is what it handled (for rows/s), 0 when it had nothing to do."""

    label: str
    seconds: float
    rows: int
    counts: str


def import_file(
    session: Session,
    path: Path,
    label: str,
    options: dict[str, Any],
    expect: dict[str, int],
    beside: Callable[[str, float], None] | None = None,
    customer: str = "bench",
) -> tuple[Run, Job, float]:
    """Enqueue one file, time it to its final status, check its counts: (run, job, seconds to first rows).

    beside, if given, is called with the job's id and start (perf_counter) right after the enqueue."""
    started = time.perf_counter()
    job, _ = enqueue(EnqueueRequest(customer, "users", path.as_uri(), options), session.jobs)
    if beside is not None:
        beside(job.id, started)
    first = None
    while not job.finished:
        time.sleep(POLL_SECONDS)
        job = session.job(job.id, started)
        if first is None and job.rows_total > 0:
            first = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    if job.status != "succeeded":
        raise session.failure(job, label, f"the job ended {job.status}")
    wrong = [
        f"{name} is {getattr(job, name):,}, must be {expect.get(name, 0):,}"
        for name in COUNTS
        if getattr(job, name) != expect.get(name, 0)
    ]
    if wrong:
        raise session.failure(job, label, "wrong counts: " + "; ".join(wrong))
    counts = ", ".join(
        f"{name[5:]} {getattr(job, name):,}" for name in COUNTS if name in expect or job.mode != "append"
    )
    return Run(label, elapsed, job.rows_total, counts), job, first or elapsed
