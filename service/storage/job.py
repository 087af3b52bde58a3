"""A job as the app DB holds it: its row, its counts, its chunks and its log lines.

Plain values, no SQL: service/storage/jobs.py (the store) reads and writes them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FINAL_STATUSES = ("succeeded", "failed", "cancelled", "undone")


@dataclass(frozen=True)
class Job:
    """A row of import_jobs; each field is a column of that name (app_db.JOB_COLUMNS selects them)."""

    id: str
    customer_id: str
    product_type: str
    blob_uri: str
    options: dict[str, Any]
    status: str
    rows_total: int
    rows_valid: int
    rows_invalid: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_duplicate: int
    rows_deleted: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    chunks_total: int | None
    chunks_done: int
    logged_errors: int
    idempotency_key: str | None
    undone_at: datetime | None = None
    # The file's layout (its header: up to max_columns names). Only the stages that read the
    # file load it; views, lists and watchers leave it None (see app_db.JOB_COLUMNS).
    plan: dict[str, Any] | None = None
    # The plan's small `format` object (its kind, compression and ZIP member): the view queries
    # select it alone, for the job's source (views.job_source). None until the file is planned.
    plan_format: dict[str, Any] | None = None
    waiting: bool = False
    publishing: bool = False
    undo_pending: bool = False
    cancel_requested: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        """Build a Job from a dict-cursor row, ignoring columns it does not carry."""
        names = cls.__dataclass_fields__
        values = {k: v for k, v in row.items() if k in names}
        values["id"] = str(values["id"])
        return cls(**values)

    @property
    def finished(self) -> bool:
        """Whether the job reached a final status."""
        return self.status in FINAL_STATUSES

    @property
    def mode(self) -> str:
        """The write mode: append (default), upsert or replace."""
        return str(self.options.get("mode", "append"))

    @property
    def replay_of(self) -> str | None:
        """The job whose rejects this job replays (SPEC 14), if it is a replay."""
        value = self.options.get("replay_of")
        return str(value) if value else None

    @property
    def atomic(self) -> bool:
        """Whether the job's rows become visible in one commit (upsert, replace, atomic append)."""
        return self.mode != "append" or bool(self.options.get("atomic"))


@dataclass(frozen=True)
class Counts:
    """What a job did to the product table (SPEC 12)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicate: int = 0
    deleted: int = 0

    def as_params(self) -> dict[str, int]:
        """The counts as query parameters."""
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "duplicate": self.duplicate,
            "deleted": self.deleted,
        }


@dataclass(frozen=True)
class ChunkWork:
    """What one chunk covers, as handed to the validate stage."""

    job_id: str
    chunk_no: int
    first_row: int
    first_line: int
    start_pos: int
    row_count: int
    attempts: int
    crashes: int


CHUNK_FIELDS = ("first_row", "first_line", "start_pos", "row_count", "attempts", "crashes")


@dataclass(frozen=True)
class LogLine:
    """A row of import_logs."""

    at: datetime
    level: str
    row_number: int | None
    field: str | None
    message: str


def request_hash(body: dict[str, Any]) -> str:
    """A stable digest of an enqueue request, to tell a replay from a conflicting reuse of a key."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
