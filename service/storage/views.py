"""What every layer shows of a job: the public views of a job, a log line and a rejected row
(SPEC 9, 14), and where a job's rows come from (SPEC 18). The edges answer with them, webhooks
post them; they live below both."""

from __future__ import annotations

from typing import Any

from service import hosts
from service.storage import rejects
from service.storage.feeds import Feed, FeedFile
from service.storage.job import Job, LogLine

# What a plan's format may name as its compression (formats.FileFormat.compression; '' is none).
COMPRESSIONS = ("gzip", "bzip2", "xz", "zstd")


def job_view(job: Job) -> dict[str, Any]:
    """The public view of a job (SPEC section 9), times as ISO 8601 strings."""

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "job_id": job.id,
        "customer_id": job.customer_id,
        "product_type": job.product_type,
        "blob_uri": hosts.shown_url(job.blob_uri),  # a signed URL's query string is a credential
        "options": job.options,
        "status": job.status,
        "rows_total": job.rows_total,
        "rows_valid": job.rows_valid,
        "rows_invalid": job.rows_invalid,
        "rows_inserted": job.rows_inserted,
        "rows_updated": job.rows_updated,
        "rows_unchanged": job.rows_unchanged,
        "rows_duplicate": job.rows_duplicate,
        "rows_deleted": job.rows_deleted,
        "error": job.error,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "undone_at": iso(job.undone_at),
        # chunks_total is null until the file is planned; the rows of a chunk count in
        # rows_total once it is done, so chunks_done / chunks_total is the job's progress.
        "progress": {"chunks_done": job.chunks_done, "chunks_total": job.chunks_total},
        "source": job_source(job),
        "upload": job_upload(job),
    }


def job_upload(job: Job) -> dict[str, str] | None:
    """The upload a job imports (SPEC 19): its id and the file name its client gave; None for
    a job enqueued by blob_uri."""
    upload = job.options.get("upload")
    if not isinstance(upload, dict):
        return None
    return {"id": str(upload.get("id")), "filename": str(upload.get("filename"))}


def job_source(job: Job) -> dict[str, str | None]:
    """Where the job's rows come from (SPEC 18): the blob_uri's scheme, the compression, the
    format and the ZIP archive member read, each null while unknown or absent.

    The format is the planned one once the file is planned, before that the `format` option
    if one was given. Plans written before compression and members existed lack them: null."""
    planned = _planned_format(job)
    option = job.options.get("format")
    return {
        "scheme": job.blob_uri.partition(":")[0].lower(),
        "compression": _text(planned.get("compression")),
        "format": _text(planned.get("kind")) or _text(option),
        "member": _text(planned.get("member")),
    }


def _planned_format(job: Job) -> dict[str, Any]:
    """The plan's `format` object (formats.FileFormat as a dict), or {} before planning.

    The stages load the whole plan; views, lists and watchers load only this small object
    (Job.plan_format), never the header of up to max_columns names the plan also holds."""
    plan = job.plan if job.plan is not None else {"format": job.plan_format}
    planned = plan.get("format")
    return planned if isinstance(planned, dict) else {}


def _text(value: Any) -> str | None:
    """A non-empty string as it is; anything else (None, '', a value of another type) as None."""
    return value if isinstance(value, str) and value else None


def reject_view(item: rejects.Reject, names: list[str] | None) -> dict[str, Any]:
    """The public view of one rejected row (SPEC 14)."""
    return {"source_row": item.source_row, "record": rejects.record(item, names), "errors": item.errors}


def log_view(line: LogLine) -> dict[str, Any]:
    """The public view of one log line."""
    return {
        "at": line.at.isoformat(),
        "level": line.level,
        "row_number": line.row_number,
        "field": line.field,
        "message": line.message,
    }


def feed_view(feed: Feed, counts: dict[str, int] | None = None, files: list[FeedFile] | None = None) -> dict[str, Any]:
    """The public view of a feed (SPEC 20): what it watches, its schedule, its last and next run;
    with counts and files, how many files it has seen, imported and failed and its latest files."""

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    view: dict[str, Any] = {
        "feed_id": feed.id,
        "customer_id": feed.customer_id,
        "product_type": feed.product_type,
        "prefix_uri": feed.prefix_uri,
        "pattern": feed.pattern,
        "options": feed.options,
        "schedule": feed.schedule,
        "after_success": feed.after_success,
        "expect_every_hours": feed.expect_every_hours,
        "paused": feed.paused,
        "late": feed.late,
        "next_run_at": None if feed.paused else iso(feed.next_run_at),
        "last_run": None
        if feed.last_run_at is None
        else {
            "at": iso(feed.last_run_at),
            "found": feed.last_run_found,
            "enqueued": feed.last_run_enqueued,
            "error": feed.last_run_error,
        },
        "last_new_file_at": iso(feed.last_new_at),
        "created_at": iso(feed.created_at),
        "updated_at": iso(feed.updated_at),
    }
    if counts is not None:
        view["files"] = counts
    if files is not None:
        view["recent"] = [feed_file_view(file) for file in files]
    return view


def feed_file_view(file: FeedFile) -> dict[str, Any]:
    """A version of a file a feed has seen, with its job and the job's status ("refused": it
    has none, `error` says why)."""
    return {
        "version": file.version_id,
        "key": file.key,
        "size": file.size,
        "seen_at": file.seen_at.isoformat(),
        "job_id": file.job_id,
        "status": file.job_status or ("refused" if file.job_id is None else None),
        "error": file.error,
        "attempts": file.attempts,
    }
