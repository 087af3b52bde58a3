"""What every layer shows of a job: the public views of a job, a log line and a rejected row
(SPEC 9, 14). The edges answer with them, webhooks post them; they live below both."""

from __future__ import annotations

from typing import Any

from service.storage import rejects
from service.storage.job import Job, LogLine


def job_view(job: Job) -> dict[str, Any]:
    """The public view of a job (SPEC section 9), times as ISO 8601 strings."""

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "job_id": job.id,
        "customer_id": job.customer_id,
        "product_type": job.product_type,
        "blob_uri": job.blob_uri,
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
    }


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
