"""`importctl watch`: follow a job until it ends, as a live bar on a terminal or plain lines."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from service.storage.jobs import Job, JobStore

BAR_WIDTH = 30
POLL_SECONDS = 0.25
# What each row of the file became (SPEC 8 and 12), in the order they are shown.
OUTCOMES = (
    ("valid", "rows_valid"),
    ("invalid", "rows_invalid"),
    ("inserted", "rows_inserted"),
    ("updated", "rows_updated"),
    ("unchanged", "rows_unchanged"),
    ("duplicate", "rows_duplicate"),
    ("deleted", "rows_deleted"),
)


def watch(
    jobs: JobStore, job_id: str, out: TextIO, interactive: bool, clock: Callable[[], float] = time.monotonic
) -> Job:
    """Poll the job and render each change until it ends; return the final job."""
    started = clock()
    last: tuple[object, ...] | None = None
    while True:
        job = jobs.get(job_id)
        assert job is not None, f"job {job_id} vanished"
        planned, complete = jobs.planned_rows(job_id)
        state = (job.status, job.rows_total, *(getattr(job, name) for _, name in OUTCOMES), planned, complete)
        if state != last:
            rate = job.rows_total / max(clock() - started, 1e-6)
            total = job.rows_total if job.finished else planned
            out.write(render_bar(job, total, complete, rate) if interactive else render_line(job, total, complete))
            out.flush()
            last = state
        if job.finished:
            if interactive:
                out.write("\n")
            return job
        time.sleep(POLL_SECONDS)


def counts(job: Job) -> str:
    """The job's row counts as `valid=N invalid=N inserted=N updated=N ...`."""
    return " ".join(f"{label}={getattr(job, name)}" for label, name in OUTCOMES)


def _of(total: int, complete: bool) -> str:
    return f"{total:,}" if complete else f"{total:,}+"


def render_bar(job: Job, total: int, complete: bool, rate: float) -> str:
    """One carriage-returned line: bar, rows done of total, rate, status."""
    fraction = 1.0 if job.finished else (job.rows_total / total if total else 0.0)
    filled = int(BAR_WIDTH * min(fraction, 1.0))
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    text = f"\r[{bar}] {job.rows_total:,}/{_of(total, complete)} rows  {rate:,.0f} rows/s  {job.status}"
    if job.finished:
        text += f"  {counts(job)}"
        if job.error:
            text += f"  error: {job.error}"
    return text + "\x1b[K"


def render_line(job: Job, total: int, complete: bool) -> str:
    """One plain line per change, for logs and pipes."""
    text = f"{job.status} rows={job.rows_total}/{_of(total, complete)} {counts(job)}"
    return text + (f" error: {job.error}" if job.error else "") + "\n"
