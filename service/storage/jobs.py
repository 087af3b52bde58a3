"""The app DB's store, `JobStore`; and `migrate` (its schema) and `ping` (is it up).

`JobStore` is built from its concerns, one module each: the base (`app_db`: connections,
transactions, queue messages), turns (`turns`: fair chunk turns, publish order), chunk plans
(`chunks`), cancel and undo (`controls`), and here the jobs themselves: creating, reading,
listing and logging them, and ending them succeeded or failed. Every state change that causes
more work writes its queue message in the same transaction, so state and work never disagree.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg2.extras

from service.errors import ImportServiceError
from service.storage.app_db import SQL_DIR, AppDB, Q, enqueue, insert_logs
from service.storage.chunks import Chunks
from service.storage.controls import Controls
from service.storage.db import connect

# The job's values live in service/storage/job.py; they stay importable from here.
from service.storage.job import FINAL_STATUSES, ChunkWork, Counts, Job, LogLine, request_hash
from service.storage.queue import Encoded
from service.storage.turns import Turns

__all__ = [
    "FINAL_STATUSES",
    "ChunkWork",
    "Counts",
    "IdempotencyConflict",
    "Job",
    "JobStore",
    "LogLine",
    "migrate",
    "ping",
    "request_hash",
]

MIGRATION_LOCK = 7_245_117_011  # any constant: serialises concurrent `migrate` runs


class IdempotencyConflict(ImportServiceError):
    """The idempotency key was used before with a different request."""


def migrate(dsn: str) -> list[str]:
    """Apply the numbered migrations not yet applied; safe to run concurrently and repeatedly."""
    conn = connect(dsn)
    applied: list[str] = []
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version FROM schema_migrations")
            done = {r[0] for r in cur.fetchall()}
            for path in sorted((SQL_DIR / "migrations").glob("*.sql")):
                version = int(path.name.split("_", 1)[0])
                if version in done:
                    continue
                cur.execute(path.read_text())
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.name))
                applied.append(path.name)
    finally:
        conn.close()
    return applied


def ping(dsn: str) -> None:
    """Run `SELECT 1` on a fresh connection (not the pool, which could hold a stale one)."""
    conn = connect(dsn, autocommit=True, application_name="import-service-ping")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()


class JobStore(Chunks, Controls, Turns, AppDB):
    """Jobs, logs, chunk plans, turns and queue messages in the app DB, over a small
    thread-safe connection pool; each base holds one concern."""

    # -- create ----------------------------------------------------------------------------

    def create_job(
        self,
        customer_id: str,
        product_type: str,
        blob_uri: str,
        options: dict[str, Any],
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
        first_stage: str = "import_fetch",
    ) -> tuple[Job, bool]:
        """Insert a job and its first message atomically; with a key, return (existing, False) on replay."""
        job_id = str(uuid.uuid4())
        params = {
            "id": job_id,
            "customer_id": customer_id,
            "product_type": product_type,
            "blob_uri": blob_uri,
            "options": psycopg2.extras.Json(options),
            "idempotency_key": idempotency_key,
            "request_hash": fingerprint,
        }
        with self.transaction() as cur:
            cur.execute(Q["insert_job"], params)
            if cur.fetchone() is None:
                cur.execute(Q["job_by_key"], (customer_id, idempotency_key))
                existing = cur.fetchone()
                if existing["request_hash"] != fingerprint:
                    raise IdempotencyConflict(f"idempotency key {idempotency_key!r} was used for another request")
                cur.execute(Q["job"], (existing["id"],))
                return Job.from_row(cur.fetchone()), False
            self._send(cur, [(first_stage, (job_id,))])
            cur.execute(Q["job"], (job_id,))
            return Job.from_row(cur.fetchone()), True

    def create_replay(self, original: Job, options: dict[str, Any], first_stage: str) -> tuple[Job, bool]:
        """A replay job of `original` and its first message, atomically: (job, True); or
        (its live replay, False) when one is queued, running or succeeded (SPEC 14)."""
        params = {
            "customer_id": original.customer_id,
            "product_type": original.product_type,
            "blob_uri": original.blob_uri,
            "options": psycopg2.extras.Json(options),
            "replay_of": original.id,
        }
        while True:  # the live replay that made the insert do nothing may end before it is read
            with self.transaction() as cur:
                job_id = str(uuid.uuid4())
                cur.execute(Q["insert_replay"], {**params, "id": job_id})
                if cur.fetchone() is not None:
                    self._send(cur, [(first_stage, (job_id,))])
                    cur.execute(Q["job"], (job_id,))
                    return Job.from_row(cur.fetchone()), True
                cur.execute(Q["live_replay"], (original.id,))
                row = cur.fetchone()
                if row is not None:
                    return Job.from_row(row), False

    # -- reads -----------------------------------------------------------------------------

    def live_replay(self, job_id: str) -> Job | None:
        """The replay of the job that is queued, running or succeeded, if there is one."""
        with self.transaction() as cur:
            cur.execute(Q["live_replay"], (job_id,))
            row = cur.fetchone()
        return Job.from_row(row) if row else None

    def plan(self, job_id: str) -> dict[str, Any] | None:
        """The job's file layout (its header: up to max_columns names), which views leave out."""
        with self.transaction() as cur:
            cur.execute(Q["job_plan"], (job_id,))
            row = cur.fetchone()
        return row["plan"] if row else None

    def get(self, job_id: str) -> Job | None:
        """The job with this id without its plan, or None (also for ids that are not UUIDs)."""
        if not _is_uuid(job_id):
            return None
        with self.transaction() as cur:
            cur.execute(Q["job"], (job_id,))
            row = cur.fetchone()
        return Job.from_row(row) if row else None

    def list_jobs(
        self, customers: Sequence[str] | None, customer_id: str | None, status: str | None, limit: int
    ) -> list[Job]:
        """Jobs newest first; `customers` None means every customer."""
        params = {
            "all_customers": customers is None,
            "customers": list(customers or []),
            "customer_id": customer_id,
            "status": status,
            "limit": limit,
        }
        with self.transaction() as cur:
            cur.execute(Q["list_jobs"], params)
            return [Job.from_row(r) for r in cur.fetchall()]

    def logs(self, job_id: str) -> list[LogLine]:
        """The job's log lines, oldest first."""
        with self.transaction() as cur:
            cur.execute(Q["logs"], (job_id,))
            return [LogLine(**r) for r in cur.fetchall()]

    def status(self, job_id: str) -> str | None:
        """The job's status alone (cheap, for watchers)."""
        with self.transaction() as cur:
            cur.execute(Q["job_status"], (job_id,))
            row = cur.fetchone()
        return str(row["status"]) if row else None

    # -- for the sweep and the retries -----------------------------------------------------

    def orphaned_jobs(self, min_age_seconds: float) -> list[Job]:
        """Unfinished jobs, unchanged for a while, that no live queue message refers to."""
        with self.transaction() as cur:
            cur.execute(Q["orphaned_jobs"], (min_age_seconds,))
            return [Job.from_row(r) for r in cur.fetchall()]

    def cleanups_due(self, min_age_seconds: float) -> list[Job]:
        """Failed jobs, failed at least this long ago, whose rows have not been deleted for good."""
        with self.transaction() as cur:
            cur.execute(Q["cleanups_due"], (min_age_seconds,))
            return [Job.from_row(r) for r in cur.fetchall()]

    def cleanup_done(self, job_id: str) -> None:
        """Take a failed job off the cleanup list."""
        with self.transaction() as cur:
            cur.execute(Q["cleanup_done"], (job_id,))

    def mark_unreachable(self, job_id: str) -> float:
        """Note that the customer DB is unreachable; return for how many seconds it has been."""
        with self.transaction() as cur:
            cur.execute(Q["mark_unreachable"], (job_id,))
            row = cur.fetchone()
        return float(next(iter(row.values()))) if row else 0.0

    # -- logs ------------------------------------------------------------------------------

    def log(
        self, job_id: str, level: str, message: str, row_number: int | None = None, field: str | None = None
    ) -> None:
        """Append one log line to a job."""
        with self.transaction() as cur:
            insert_logs(cur, job_id, [(level, row_number, field, message)])

    def log_webhook(self, job_id: str, lines: Sequence[tuple[str, str]], retry: Encoded | None = None) -> None:
        """Log a webhook attempt as (level, message) lines and queue the next attempt, atomically.

        Only import_logs and the queue are written: a delivery never changes the job's row."""
        with self.transaction() as cur:
            insert_logs(cur, job_id, [(level, None, None, message) for level, message in lines])
            if retry is not None:
                enqueue(cur, retry)

    # -- ends ------------------------------------------------------------------------------

    def succeed(self, job_id: str, counts: Counts, message: str, warnings: Sequence[tuple[int, str]] = ()) -> bool:
        """Mark the job succeeded with its counts, row warnings and a closing line; wake jobs waiting for it."""
        with self.transaction() as cur:
            cur.execute(Q["succeed_counts"], {**counts.as_params(), "id": job_id})
            row = cur.fetchone()
            if row is None:
                return False
            lines = [("warning", source_row, None, text) for source_row, text in warnings]
            insert_logs(cur, job_id, [*lines, ("info", None, None, message)])
            cur.execute(Q["delete_chunks"], (job_id,))
            self._wake_waiters(cur, row["customer_id"], row["product_type"])
            self._send_webhook(cur, job_id, "succeeded")
            return True

    def fail(self, job_id: str, error: str) -> bool:
        """Mark the job failed (if it is not finished; `cancelled` if a cancel was asked) and log
        the reason; wake jobs waiting for it."""
        with self.transaction() as cur:
            customer_id = self._lock_turns(cur, job_id)
            cur.execute(Q["fail_job"], (error, job_id))
            row = cur.fetchone()
            if row is None:
                return False
            level = "error" if row["status"] == "failed" else "info"
            insert_logs(cur, job_id, [(level, None, None, error)])
            self._end(cur, job_id, row, customer_id)
            return True


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
