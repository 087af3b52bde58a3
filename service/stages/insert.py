"""The last stage of an import (insert): journal a streaming job's rows or publish an atomic
job's, and what an atomic job whose COMMIT outcome is unknown does meanwhile (SPEC 12).
"""

from __future__ import annotations

import datetime
import logging

from service.errors import JobFailed
from service.schema import kept_keys
from service.stages.services import Services
from service.storage.jobs import Counts, Job

log = logging.getLogger(__name__)

WAITING = "commit outcome unknown; waiting for the customer database to say"


def insert(services: Services, job: Job) -> None:
    """Close the job: check and journal a streaming job's rows, or publish an atomic job's."""
    on_invalid = job.options.get("on_invalid", "fail" if job.mode == "replace" else "skip")
    if on_invalid == "fail" and job.rows_invalid:
        raise JobFailed(
            f"{job.rows_invalid} of {job.rows_total} rows are invalid and on_invalid is 'fail' (see the log)"
        )
    if job.options.get("dry_run"):
        services.customer(job.customer_id).drop_chunk_cells(job.id)
        message = f"dry run: {job.rows_valid} valid and {job.rows_invalid} invalid rows, nothing written"
        services.jobs.succeed(job.id, Counts(), message)
        return
    if job.mode == "replace" and job.rows_valid == 0 and not job.options.get("allow_empty"):
        raise JobFailed("replace found no valid rows and would empty the table; set allow_empty: true to allow it")
    store = services.customer(job.customer_id)
    if not job.atomic:
        inserted = store.journal_append(job.id, job.product_type, job.rows_valid)
        if inserted != job.rows_valid:
            raise JobFailed(f"the customer table holds {inserted} rows of this job, but {job.rows_valid} were valid")
        services.jobs.succeed(job.id, Counts(inserted=inserted), summarize(job, Counts(inserted=inserted)))
        return
    if services.jobs.wait_turn(job):
        return  # the last earlier job to end sends this stage again
    publish(services, job)


def publish(services: Services, job: Job) -> None:
    """Publish an atomic job's staged rows in one commit, then mark it succeeded.

    A replace with invalid rows keeps the table rows whose key one of them holds (SPEC 12)."""
    product = services.products.get(job.product_type)
    room = max(0, services.config.max_logged_errors - job.logged_errors)
    spare = None
    if job.mode == "replace" and job.rows_invalid:
        spare = kept_keys.reader(product, (job.plan or {}).get("columns") or [])
    publication = services.customer(job.customer_id).publish(
        job.id,
        job.product_type,
        job.mode,
        product.key,
        job.rows_valid,
        room,
        still_running=lambda: services.jobs.status(job.id) == "running",
        confirm=lambda: services.jobs.start_publishing(job.id),
        spare=spare,
    )
    if publication.kept:
        rows = "1 row" if publication.kept == 1 else f"{publication.kept} rows"
        message = f"replace kept {rows} of the table, not deleted: their key is on an invalid line of the file"
        services.jobs.log(job.id, "warning", message)
    services.jobs.succeed(job.id, publication.counts, summarize(job, publication.counts), publication.warnings)


def summarize(job: Job, counts: Counts) -> str:
    """The closing log line of a succeeded job."""
    parts = [f"{counts.inserted} inserted"]
    if job.mode != "append":
        parts += [f"{counts.updated} updated", f"{counts.unchanged} unchanged", f"{counts.duplicate} duplicate"]
    if job.mode == "replace":
        parts.append(f"{counts.deleted} deleted")
    return f"{job.mode}: " + ", ".join(parts) + f"; {job.rows_invalid} invalid rows skipped"


def wait_for_journal(services: Services, job: Job) -> bool:
    """Keep an atomic job whose COMMIT outcome is unknown running, saying so once in its log;
    False once its customer database's journal is past keeping (the job must end now).

    The journal is kept undo_retention_days (purge_history deletes it then): past that the
    database could no longer say, so the wait is bounded by it (SPEC 8: every job ends)."""
    started = job.started_at or job.created_at
    age = datetime.datetime.now(datetime.UTC) - started
    if age > datetime.timedelta(days=services.config.undo_retention_days):
        return False
    log.warning("job %s: %s", job.id, WAITING)
    if not any(line.message == WAITING for line in services.jobs.logs(job.id)):
        services.jobs.log(job.id, "warning", WAITING)
    return True


def unknown_outcome(services: Services) -> str:
    """The error of a job whose COMMIT outcome stayed unknown for as long as the journal is kept."""
    days = services.config.undo_retention_days
    return (
        f"the outcome of its publish is unknown: the customer database could not be read for {days} days "
        "(its changes may be in the table; see import_service.publishes there)"
    )
