"""Cancel and undo (SPEC 13): what the edges ask for, and what a worker finishes for a big undo."""

from __future__ import annotations

import logging
import time

from service.errors import JobConflict
from service.stages.cleanup import discard_rows
from service.stages.services import DISCARD, UNDO, Services
from service.storage.jobs import Job

log = logging.getLogger(__name__)

# An undo of up to this many written rows runs in the caller's process (the answer is 200);
# a bigger one goes to a worker (202), so no request waits on a long transaction.
UNDO_INLINE_ROWS = 20_000
# A cancelled streaming job with up to this many rows counted has them deleted in the
# caller's process (the answer is 200, `cancelled`); a bigger one by the worker the cancel
# sent (202, `running` until its rows are gone).
CANCEL_INLINE_ROWS = 200_000
# How long a cancel waits for a publish that is committing at that instant to end.
COMMIT_WAIT_SECONDS = 8.0
POLL_SECONDS = 0.1


def cancel(services: Services, job: Job) -> tuple[Job, bool]:
    """Stop a queued or running job at once and delete what it left; (job, complete).

    A streaming job's rows are in the table: it reads `cancelled` only once they are gone."""
    deadline = time.monotonic() + COMMIT_WAIT_SECONDS
    while (outcome := services.jobs.cancel(job.id, DISCARD)) is None:
        job = _reload(services, job)
        if job.status == "cancelled":
            return job, True
        if job.finished:
            hint = "; undo it to take its rows back" if job.status == "succeeded" else ""
            raise JobConflict(f"job {job.id} has already ended ({job.status}); it cannot be cancelled{hint}")
        if time.monotonic() > deadline:
            raise JobConflict(f"job {job.id} is committing its rows right now; ask again in a few seconds")
        time.sleep(POLL_SECONDS)  # its publish is committing: it is about to end one way or the other
    # A worker deletes what the job left (the cancel sent it); a chunk still in flight writes
    # nothing once the rows were discarded (CustomerStore.discard), and the sweep deletes once
    # more later. A streaming job is ended here when its rows are few enough to delete now.
    if outcome == "requested":
        job = _reload(services, job)
        if job.rows_valid > CANCEL_INLINE_ROWS or not finish_cancel(services, job):
            log.info("job %s: cancel requested; a worker deletes its rows", job.id)
            return _reload(services, job), False
    log.info("job %s: cancelled", job.id)
    return _reload(services, job), True


def finish_cancel(services: Services, job: Job) -> bool:
    """Delete a running job's rows whose cancel was requested, then end it `cancelled`; False
    while its customer database cannot be reached (the worker the cancel sent retries)."""
    if not discard_rows(services, job):
        return False
    services.jobs.finish_cancel(job.id)
    return True


def undo(services: Services, job: Job) -> tuple[Job, bool]:
    """Undo a succeeded job: here when small, by a worker when big; (job, complete)."""
    if job.status == "undone":
        return job, True
    if job.status != "succeeded":
        raise JobConflict(f"job {job.id} is {job.status}; only a succeeded job can be undone")
    if job.options.get("dry_run"):
        raise JobConflict(f"job {job.id} was a dry run and wrote nothing; there is nothing to undo")
    written = job.rows_inserted + job.rows_updated + job.rows_deleted
    if written <= UNDO_INLINE_ROWS:
        run_undo(services, job)
        return _reload(services, job), True
    product = services.products.get(job.product_type)
    # Refusals are answered now; the worker checks again inside its transaction.
    services.customer(job.customer_id).undo(
        job.id, job.product_type, product.key, services.config.undo_retention_days, check_only=True
    )
    services.jobs.request_undo(job.id, UNDO)
    return _reload(services, job), False


def run_undo(services: Services, job: Job) -> None:
    """Put the product table back as it was before the job, then mark the job undone."""
    product = services.products.get(job.product_type)
    done = services.customer(job.customer_id).undo(
        job.id, job.product_type, product.key, services.config.undo_retention_days
    )
    message = (
        f"undone: {done.removed} inserted rows deleted, {done.restored} updated rows restored, "
        f"{done.revived} deleted rows put back"
    )
    services.jobs.mark_undone(job.id, "undone (it had been undone already)" if done.already else message)


def finish_undo(services: Services, job_id: str) -> None:
    """A worker's part of a big undo; a refusal found now is logged on the job."""
    job = services.jobs.get(job_id)
    if job is None or job.status != "succeeded" or not job.undo_pending:
        return
    try:
        run_undo(services, job)
    except JobConflict as exc:
        services.jobs.end_undo_request(job.id, str(exc))


def _reload(services: Services, job: Job) -> Job:
    fresh = services.jobs.get(job.id)
    assert fresh is not None, f"job {job.id} vanished"
    return fresh
