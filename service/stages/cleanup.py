"""Failing a job and deleting what a failed or cancelled job left (at once, by a worker after
a cancel, and once more by the sweep), and purging undo history past its retention.
"""

from __future__ import annotations

import logging

from service.errors import CustomerDBRefused, CustomerDBUnavailable
from service.stages import insert as closing
from service.stages.insert import summarize
from service.stages.services import CLEANUP_AFTER_SECONDS, Services
from service.storage.jobs import Job

log = logging.getLogger(__name__)


def fail_job(services: Services, job: Job, error: str) -> bool:
    """Mark the job failed and delete what it left; the sweep deletes once more later. False
    when the job may not fail yet (it stays running).

    An atomic job whose publish committed (its journal says so) succeeded after all: it is
    finished as such, never failed with its rows in the table. One that claimed its commit
    (`publishing`) while its journal cannot be read may have committed: it stays running until
    the journal says (see closing.wait_for_journal). A streaming job's rows are deleted before
    and after it is marked failed, so nobody sees a `failed` job with rows; a chunk committing
    later sees the job failed and deletes its own (see `sweep_cleanups` for one that dies in between).
    """
    if job.atomic:
        job = services.jobs.get(job.id) or job  # (a stage's copy predates its claim of the commit)
        recorded = _finish_published(services, job)
        if recorded:
            return True
        if recorded is None and job.publishing and job.status == "running":
            if closing.wait_for_journal(services, job):
                return False
            error = closing.unknown_outcome(services)
    reachable = discard_rows(services, job)
    if services.jobs.fail(job.id, error):
        log.info("job %s failed: %s", job.id, error)
    if reachable:
        discard_rows(services, job)
    return True


def _finish_published(services: Services, job: Job) -> bool | None:
    """Succeed an atomic job whose publish committed before the app DB heard of it: True;
    False when it did not commit, None when the journal cannot be read."""
    try:
        publication = services.customer(job.customer_id).journal(job.id)
    except (CustomerDBUnavailable, CustomerDBRefused) as exc:
        log.warning("job %s: cannot check whether its publish committed: %s", job.id, exc)
        return None
    if publication is None:
        return False
    services.jobs.succeed(job.id, publication.counts, summarize(job, publication.counts))
    return True


def discard_rows(services: Services, job: Job) -> bool:
    """Delete what a failed or cancelled job left; False when the database is unreachable."""
    try:
        deleted = services.customer(job.customer_id).discard(job.id, job.product_type, job.atomic)
    except CustomerDBUnavailable as exc:
        log.warning("job %s: rows not deleted yet, the sweep will retry: %s", job.id, exc)
        return False
    except CustomerDBRefused as exc:
        # A table the service did not create (no job_id column): it cannot hold rows of ours.
        log.warning("job %s: %s", job.id, exc)
        return True
    if deleted:
        log.info("job %s: deleted %d rows of the %s job", job.id, deleted, job.status)
    return True


def discard_cancelled(services: Services, job_id: str) -> None:
    """Delete what a cancelled job left (a worker does it, so a cancel request never waits on it);
    a running job whose cancel was requested reads `cancelled` only once its rows are gone."""
    job = services.jobs.get(job_id)
    if job is None or not (job.status == "cancelled" or job.cancel_requested):
        return
    if not discard_rows(services, job) and job.cancel_requested:
        raise CustomerDBUnavailable(f"job {job.id}: its rows cannot be deleted yet; retrying")
    services.jobs.finish_cancel(job.id)


def sweep_cleanups(services: Services) -> None:
    """Delete failed or cancelled jobs' leftovers once more, after any chunk in flight then has ended."""
    for job in services.jobs.cleanups_due(CLEANUP_AFTER_SECONDS):
        if discard_rows(services, job):
            services.jobs.cleanup_done(job.id)


def purge_history(services: Services) -> None:
    """Delete undo history past `undo_retention_days` in every customer database."""
    for customer_id in services.config.customers:
        try:
            services.customer(customer_id).purge_history(services.config.undo_retention_days)
        except (CustomerDBUnavailable, CustomerDBRefused) as exc:
            log.warning("customer %s: undo history not purged this time: %s", customer_id, exc)
