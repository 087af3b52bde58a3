"""Runs the stages: one job-level stage or one chunk at a time, with what their errors do.

The stages are plain functions (fetch, validate, insert, replay...): each loads its job by id,
does one step, and names the next stage; the JobStore writes that message in the same
transaction as the state it follows from. Every stage is safe to run twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service import logs
from service.errors import CustomerDBUnavailable, JobCancelled, JobFailed
from service.stages.cleanup import fail_job
from service.stages.fetch import fetch
from service.stages.replay import replay
from service.stages.services import MAX_CRASHES, Services
from service.stages.validate import validate
from service.storage.jobs import Job

log = logging.getLogger(__name__)


def run_stage(services: Services, stage: Callable[..., None], job_id: str) -> None:
    """Run one job-level stage: bad files fail the job, an unreachable customer DB is retried.

    One transaction loads the job and marks the stage running (the first stage also starts
    the job). The transaction that ends the stage clears the mark (planning done, succeed,
    fail, waiting for a turn); only a stage that stops otherwise needs a leave_stage of its own.
    """
    entered = services.jobs.enter_stage(job_id, stage.__name__, start=stage in (fetch, replay))
    if entered is None:
        log.info("job %s: %s skipped, the job is not running", job_id, stage.__name__)
        return
    job, crashes = entered
    ended = False
    try:
        with _stage_outcome(services, job, stage.__name__):
            if crashes >= MAX_CRASHES:
                raise JobFailed(f"a worker died {crashes} times while running stage {stage.__name__}; giving up")
            stage(services, job)
        ended = True  # done, failed or cancelled; not when it raised to be retried
    finally:
        if not ended:
            services.jobs.leave_stage(job_id, stage.__name__)


def run_chunk(services: Services, job_id: str, chunk_no: int) -> None:
    """Run the validate stage of one chunk (see validate), with the errors handled as run_stage does."""
    begun = services.jobs.begin_chunk(job_id, chunk_no)
    if begun is None:
        return  # done already, or the job is not running
    job, work = begun
    completed = False
    try:
        with _stage_outcome(services, job, f"validate[{chunk_no}]"):
            if work.crashes >= MAX_CRASHES:
                last = work.first_row + work.row_count - 1
                raise JobFailed(f"rows {work.first_row}-{last} made a worker die {work.crashes} times; giving up")
            completed = validate(services, job, work)
    finally:
        if not completed:  # complete_chunk ends the attempt itself
            services.jobs.end_chunk_attempt(job_id, chunk_no)


@contextmanager
def _stage_outcome(services: Services, job: Job, name: str) -> Iterator[None]:
    """What a stage's errors do: a bad file fails the job, a cancel stops quietly, an
    unreachable customer DB is retried (re-raised) until customer_db_retry_seconds."""
    started = time.perf_counter()
    with logs.job_context(job.id, job.customer_id, name):
        try:
            yield
            log.info("job %s: %s done in %.3f s", job.id, name, time.perf_counter() - started)
        except JobCancelled:
            log.info("job %s: %s stopped, the job was cancelled", job.id, name)
        except JobFailed as exc:
            fail_job(services, job, str(exc))
        except CustomerDBUnavailable as exc:
            waited = services.jobs.mark_unreachable(job.id)
            if waited >= services.config.customer_db_retry_seconds:
                if fail_job(services, job, f"{exc} (gave up after {waited:.0f} s)"):
                    return
                # Its COMMIT's outcome is unknown: retried with backoff, then by the sweep.
            log.warning("job %s: %s; will retry", job.id, exc)
            raise
