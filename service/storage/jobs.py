"""The only module that runs app-DB SQL: jobs, logs, chunk plans, migrations, queue messages.

Every state change that should cause more work writes the queue message on the same
cursor, in the same transaction (see `Dispatch`), so state and work never disagree.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras

from service.errors import ImportServiceError, RowError
from service.stages import webhooks
from service.storage.db import IdleConnections, connect, load_queries

# The job's values live in service/job.py; they stay importable from here.
from service.storage.job import CHUNK_FIELDS, FINAL_STATUSES, ChunkWork, Counts, Job, LogLine, request_hash  # noqa: F401

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).parent / "sql"
MIGRATION_LOCK = 7_245_117_011  # any constant: serialises concurrent `migrate` runs

# (actor name, args) -> (queue name, message id, encoded message): provided by actors/.
Dispatch = Callable[[str, tuple[Any, ...]], tuple[str, str, dict[str, Any]]]
Send = tuple[str, tuple[Any, ...]]


class IdempotencyConflict(ImportServiceError):
    """The idempotency key was used before with a different request."""


# Every column a Job carries but its plan: views, lists and watchers never load a header
# of up to max_columns names; the stages that read the file do (see `JobStore.plan`).
JOB_COLUMNS = ", ".join(name for name in Job.__dataclass_fields__ if name != "plan")
Q = {name: text.replace("{job_columns}", JOB_COLUMNS) for name, text in load_queries(SQL_DIR / "queries.sql").items()}


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


class JobStore:
    """Jobs, logs and chunk plans in the app DB, over a small thread-safe connection pool."""

    def __init__(
        self,
        dsn: str,
        dispatch: Dispatch | None = None,
        maxconn: int = 8,
        publish_stage: str = "import_insert",
        chunk_stage: str = "import_validate",
        chunks_in_flight: int = 8,
    ) -> None:
        self._dsn = dsn
        self._publish_stage = publish_stage
        self._chunk_stage = chunk_stage
        self._chunks_in_flight = chunks_in_flight
        self._dispatch = dispatch
        self._idle = IdleConnections(per_dsn=maxconn, total=maxconn)

    @property
    def dsn(self) -> str:
        """The app DB's DSN."""
        return self._dsn

    def close(self) -> None:
        """Close every idle connection."""
        self._idle.close_all()

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """One transaction on a kept connection (up to maxconn stay open idle); a broken
        connection is discarded, not reused."""
        conn = self._idle.take(self._dsn) or connect(self._dsn)
        broken = False
        try:
            with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            if broken:
                conn.close()
            else:
                self._idle.give(self._dsn, conn)

    def _send(self, cur: Any, sends: Iterable[Send]) -> None:
        """Write queue messages on this cursor (they commit with the transaction)."""
        for actor_name, args in sends:
            if self._dispatch is None:
                raise RuntimeError("this JobStore was built without a dispatcher and cannot send work")
            _enqueue(cur, self._dispatch(actor_name, args))

    def _send_webhook(self, cur: Any, job_id: str, status: str) -> None:
        """Queue the job's webhook for its final status, if it has a callback_url (SPEC 16).

        Every transaction that sets a final status calls this, so the delivery commits or
        rolls back with the status it reports."""
        cur.execute(Q["callback_url"], (job_id,))
        row = cur.fetchone()
        if row is not None and row["callback_url"]:
            _enqueue(cur, webhooks.delivery_message(job_id, status))

    # -- enqueue and reads ---------------------------------------------------------------

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

    # -- pipeline state ----------------------------------------------------------------

    def save_plan(
        self,
        job_id: str,
        plan: dict[str, Any],
        warnings: Sequence[str],
        sends: Sequence[Send],
        notes: Sequence[str] = (),
    ) -> bool:
        """Record the file's layout, log warnings and notes (info) and send the next stage, atomically."""
        with self.transaction() as cur:
            cur.execute(Q["save_plan"], (psycopg2.extras.Json(plan), job_id))
            if cur.rowcount == 0:
                return False
            lines = [("warning", None, None, w) for w in warnings] + [("info", None, None, n) for n in notes]
            _insert_logs(cur, job_id, lines)
            self._send(cur, sends)
            return True

    def add_chunks(
        self,
        job_id: str,
        chunks: Sequence[tuple[int, int, int, int, int]],
        *,
        plan: dict[str, Any] | None = None,
        lines: Sequence[tuple[str, str]] = (),
        total: int | None = None,
        final_stage: str = "import_insert",
    ) -> bool:
        """Record chunks (no, first_row, first_line, start_pos, rows) and send as many chunk
        messages as the customer's turns allow (see `_take_turns`), in one transaction.

        With `plan`, the file's layout is saved first (the chunks' messages need it); `lines`
        are (level, message) lines for the job's log; with `total`, planning ends there (see
        finish_planning). Returns False,
        recording nothing, when the job is no longer running (cancelled or failed)."""
        with self.transaction() as cur:
            customer_id = self._lock_turns(cur, job_id)
            cur.execute(Q["job_state_for_update"], (job_id,))
            row = cur.fetchone()
            if customer_id is None or row is None or row["status"] != "running" or row["cancel_requested"]:
                return False
            if plan is not None:
                cur.execute(Q["save_plan"], (psycopg2.extras.Json(plan), job_id))
            _insert_logs(cur, job_id, [(level, None, None, message) for level, message in lines])
            for chunk in chunks:
                cur.execute(Q["insert_chunk"], (job_id, *chunk))  # a rerun keeps what was sent
            self._take_turns(cur, customer_id)
            if total is not None:
                self._finish_planning(cur, job_id, total, final_stage)
            return True

    # -- fair turns: each customer has at most chunks_in_flight chunk messages out (SPEC 15) --

    def _lock_turns(self, cur: Any, job_id: str) -> str | None:
        """Take the job's customer's turns lock (before any row lock); the customer, None if no job."""
        cur.execute(Q["job_customer"], (job_id,))
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(Q["customer_turns_lock"], (row["customer_id"],))
        return str(row["customer_id"])

    def _take_turns(self, cur: Any, customer_id: str) -> None:
        """Send the customer's next chunks while it has fewer than chunks_in_flight out, each
        from its running job with the fewest out (same transaction, under the turns lock)."""
        cur.execute(Q["customer_in_flight"], (customer_id,))
        room = self._chunks_in_flight - int(cur.fetchone()["n"])
        sends: list[Send] = []
        for _ in range(room):
            cur.execute(Q["send_next_chunk"], {"customer": customer_id})
            row = cur.fetchone()
            if row is None:
                break
            sends.append((self._chunk_stage, (row["job_id"], row["chunk_no"])))
        self._send(cur, sends)

    def take_stalled_turns(self) -> None:
        """Send turns of customers with unsent chunks and room for them (a safety net for the sweep)."""
        with self.transaction() as cur:
            cur.execute(Q["customers_with_unsent_chunks"])
            customers = [str(r["customer_id"]) for r in cur.fetchall()]
        for customer_id in customers:
            with self.transaction() as cur:
                cur.execute(Q["customer_turns_lock"], (customer_id,))
                self._take_turns(cur, customer_id)

    def finish_planning(self, job_id: str, chunks_total: int, final_stage: str) -> None:
        """Fix the number of chunks (the planning stage ends); when all are already done, send the final stage."""
        with self.transaction() as cur:
            self._finish_planning(cur, job_id, chunks_total, final_stage)

    def _finish_planning(self, cur: Any, job_id: str, chunks_total: int, final_stage: str) -> None:
        cur.execute(Q["finish_planning"], (chunks_total, job_id))
        row = cur.fetchone()
        if row and row["chunks_done"] >= row["chunks_total"]:
            self._send(cur, [(final_stage, (job_id,))])

    def begin_chunk(self, job_id: str, chunk_no: int) -> tuple[Job, ChunkWork] | None:
        """Count an attempt at a chunk: (its job, the chunk); None when the chunk is done or the
        job is not running."""
        with self.transaction() as cur:
            cur.execute(Q["begin_chunk"], (job_id, chunk_no))
            row = cur.fetchone()
        if row is None:
            return None
        work = ChunkWork(job_id=job_id, chunk_no=chunk_no, **{k: row[k] for k in CHUNK_FIELDS})
        return Job.from_row(row), work

    def end_chunk_attempt(self, job_id: str, chunk_no: int) -> None:
        """Note that an attempt at a chunk ended (in any way but the worker dying)."""
        with self.transaction() as cur:
            cur.execute(Q["end_chunk_attempt"], (job_id, chunk_no))

    def enter_stage(self, job_id: str, stage: str, start: bool = False) -> tuple[Job, int] | None:
        """Mark a job-level stage as running (with start, a queued job starts): (the job, how
        often this stage died before); None when the job is not running (or queued, with start)."""
        with self.transaction() as cur:
            cur.execute(Q["enter_stage"], {"stage": stage, "id": job_id, "start": start})
            row = cur.fetchone()
        return (Job.from_row(row), int(row["stage_crashes"])) if row else None

    def leave_stage(self, job_id: str, stage: str) -> None:
        """Note that a job-level stage attempt ended (in any way but the worker dying)."""
        with self.transaction() as cur:
            cur.execute(Q["leave_stage"], (job_id, stage))

    def complete_chunk(
        self,
        job_id: str,
        chunk_no: int,
        valid: int,
        invalid: int,
        errors: Sequence[RowError],
        max_logged: int,
        final_stage: str,
    ) -> bool:
        """Count a chunk exactly once, log its row errors up to the job's cap, send the final stage when last.

        Returns False when the job is no longer running (its rows must go). A counted chunk
        gives its turn to the customer's next chunk (see `_take_turns`)."""
        with self.transaction() as cur:
            customer_id = self._lock_turns(cur, job_id)
            cur.execute(Q["complete_chunk"], (valid, invalid, job_id, chunk_no))
            if cur.fetchone() is None:
                # Counted already (a redelivered message), or the job failed or is cancelled
                # meanwhile, which deleted its chunk plan: then this chunk's rows must go.
                cur.execute(Q["job_status"], (job_id,))
                row = cur.fetchone()
                return row is None or not (row["status"] in ("failed", "cancelled") or row["cancel_requested"])
            cur.execute(Q["job_state_for_update"], (job_id,))
            job = cur.fetchone()
            room = max(0, max_logged - job["logged_errors"])
            logged = list(errors[:room])
            _insert_logs(cur, job_id, [("error", e.source_row, e.field, e.message) for e in logged])
            cur.execute(Q["count_chunk"], {"valid": valid, "invalid": invalid, "logged": len(logged), "id": job_id})
            row = cur.fetchone()
            if row is None:
                return False
            if row["chunks_total"] is not None and row["chunks_done"] >= row["chunks_total"]:
                self._send(cur, [(final_stage, (job_id,))])
            if customer_id is not None:
                self._take_turns(cur, customer_id)
            return True

    def succeed(self, job_id: str, counts: Counts, message: str, warnings: Sequence[tuple[int, str]] = ()) -> bool:
        """Mark the job succeeded with its counts, row warnings and a closing line; wake jobs waiting for it."""
        with self.transaction() as cur:
            cur.execute(Q["succeed_counts"], {**counts.as_params(), "id": job_id})
            row = cur.fetchone()
            if row is None:
                return False
            lines = [("warning", source_row, None, text) for source_row, text in warnings]
            _insert_logs(cur, job_id, [*lines, ("info", None, None, message)])
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
            _insert_logs(cur, job_id, [(level, None, None, error)])
            self._end(cur, job_id, row, customer_id)
            return True

    def cancel(self, job_id: str, cleanup_stage: str) -> str | None:
        """Stop a queued or running job at once: drop its queued work and send `cleanup_stage`.

        "cancelled" when that ended it; "requested" for a running streaming job, which reads
        `running` until its rows are deleted and `finish_cancel` ends it; None when it cannot
        be cancelled now (it ended, or its publish is committing)."""
        with self.transaction() as cur:
            customer_id = self._lock_turns(cur, job_id)
            cur.execute(Q["job_state_for_update"], (job_id,))
            state = cur.fetchone()
            if state is None or state["status"] not in ("queued", "running") or state["publishing"]:
                return None
            if state["cancel_requested"]:
                return "requested"
            options = state["options"]
            streaming = options.get("mode", "append") == "append" and not options.get("atomic")
            if state["status"] == "running" and streaming and not options.get("dry_run"):
                cur.execute(Q["request_cancel"], (job_id,))
                message, outcome = "cancel requested; its rows are being deleted", "requested"
            else:
                cur.execute(Q["cancel_job"], (job_id,))
                message, outcome = "cancelled; its rows are discarded", "cancelled"
            row = cur.fetchone()
            _insert_logs(cur, job_id, [("info", None, None, message)])
            cur.execute(Q["drop_queued_messages"], (job_id,))
            self._send(cur, [(cleanup_stage, (job_id,))])
            if outcome == "cancelled":
                self._end(cur, job_id, dict(row, status="cancelled"), customer_id)
            else:
                cur.execute(Q["delete_chunks"], (job_id,))
                if customer_id is not None:
                    self._take_turns(cur, customer_id)  # its chunks out no longer count
            return outcome

    def finish_cancel(self, job_id: str) -> bool:
        """End a job whose cancel was requested `cancelled`, once its rows are deleted."""
        with self.transaction() as cur:
            customer_id = self._lock_turns(cur, job_id)
            cur.execute(Q["finish_cancel"], (job_id,))
            row = cur.fetchone()
            if row is None:
                return False
            _insert_logs(cur, job_id, [("info", None, None, "cancelled; its rows are deleted")])
            self._end(cur, job_id, dict(row, status="cancelled"), customer_id)
            return True

    def _end(self, cur: Any, job_id: str, row: dict[str, Any], customer_id: str | None) -> None:
        """What follows a job's failure or cancel in its transaction: its chunks go, its webhook
        is queued, jobs waiting for it wake and its customer's next chunks get its turns."""
        cur.execute(Q["delete_chunks"], (job_id,))
        self._send_webhook(cur, job_id, row["status"])  # after any message drop, which would take it too
        self._wake_waiters(cur, row["customer_id"], row["product_type"])
        if customer_id is not None:
            self._take_turns(cur, customer_id)  # its chunks out no longer count

    # -- turns: jobs of one customer and product publish in the order they were enqueued -----

    def wait_turn(self, job: Job) -> list[str]:
        """Park the job if earlier jobs of its customer and product may still write; their ids."""
        with self.transaction() as cur:
            cur.execute(Q["publish_order_lock"], (job.customer_id, job.product_type))
            cur.execute(Q["earlier_unfinished"], (job.id,))
            earlier = [str(r["id"]) for r in cur.fetchall()]
            if earlier:
                cur.execute(Q["start_waiting"], (job.id,))
                message = "waiting for earlier job(s) of this product to end before publishing: " + ", ".join(earlier)
                _insert_logs(cur, job.id, [("info", None, None, message)])
            return earlier

    def _wake_waiters(self, cur: Any, customer_id: str, product_type: str) -> None:
        """Send the publish of every waiting job whose earlier jobs have all ended (same transaction)."""
        cur.execute(Q["publish_order_lock"], (customer_id, product_type))
        cur.execute(Q["wake_waiters"], (customer_id, product_type))
        woken = [str(r["id"]) for r in cur.fetchall()]
        if woken and self._publish_stage:
            self._send(cur, [(self._publish_stage, (job_id,)) for job_id in woken])

    def wake_stalled(self, min_age_seconds: float) -> None:
        """Wake waiting jobs whose turn came without them being woken (a safety net for the sweep)."""
        with self.transaction() as cur:
            cur.execute(Q["waiting_turns"], (min_age_seconds,))
            turns = [(r["customer_id"], r["product_type"]) for r in cur.fetchall()]
        for customer_id, product_type in turns:
            with self.transaction() as cur:
                self._wake_waiters(cur, customer_id, product_type)

    def start_publishing(self, job_id: str) -> bool:
        """Claim the last instant before a publish commits; False when the job was cancelled."""
        with self.transaction() as cur:
            cur.execute(Q["start_publishing"], (job_id,))
            return cur.fetchone() is not None

    def status(self, job_id: str) -> str | None:
        """The job's status alone (cheap, for watchers)."""
        with self.transaction() as cur:
            cur.execute(Q["job_status"], (job_id,))
            row = cur.fetchone()
        return str(row["status"]) if row else None

    # -- undo ------------------------------------------------------------------------------

    def request_undo(self, job_id: str, stage: str) -> bool:
        """Hand a big undo to a worker: flag it and send `stage`, atomically; False if already asked."""
        with self.transaction() as cur:
            cur.execute(Q["request_undo"], (job_id,))
            if cur.fetchone() is None:
                return False
            self._send(cur, [(stage, (job_id,))])
            return True

    def mark_undone(self, job_id: str, message: str) -> bool:
        """Mark a succeeded job undone, with a log line."""
        with self.transaction() as cur:
            cur.execute(Q["mark_undone"], (job_id,))
            if cur.fetchone() is None:
                return False
            _insert_logs(cur, job_id, [("info", None, None, message)])
            self._send_webhook(cur, job_id, "undone")
            return True

    def end_undo_request(self, job_id: str, message: str | None = None) -> None:
        """Clear a worker undo that was refused or failed, logging why."""
        with self.transaction() as cur:
            cur.execute(Q["end_undo_request"], (job_id,))
            if message:
                _insert_logs(cur, job_id, [("error", None, None, message)])

    def log(
        self, job_id: str, level: str, message: str, row_number: int | None = None, field: str | None = None
    ) -> None:
        """Append one log line to a job."""
        with self.transaction() as cur:
            _insert_logs(cur, job_id, [(level, row_number, field, message)])

    def log_webhook(self, job_id: str, lines: Sequence[tuple[str, str]], retry: webhooks.Encoded | None = None) -> None:
        """Log a webhook attempt as (level, message) lines and queue the next attempt, atomically.

        Only import_logs and the queue are written: a delivery never changes the job's row."""
        with self.transaction() as cur:
            _insert_logs(cur, job_id, [(level, None, None, message) for level, message in lines])
            if retry is not None:
                _enqueue(cur, retry)

    def planned_rows(self, job_id: str) -> tuple[int, bool]:
        """Rows in the chunks planned so far, and whether planning is complete (for progress)."""
        with self.transaction() as cur:
            cur.execute(Q["planned_rows"], (job_id,))
            row = cur.fetchone()
        return (int(row["planned"]), bool(row["complete"])) if row else (0, False)

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


def _enqueue(cur: Any, encoded: tuple[str, str, dict[str, Any]]) -> None:
    """Write one encoded queue message on this cursor (it commits with the transaction)."""
    queue, message_id, message = encoded
    cur.execute(
        Q["enqueue_message"],
        {"queue": queue, "message_id": message_id, "message": psycopg2.extras.Json(message)},
    )


def _insert_logs(cur: Any, job_id: str, lines: Sequence[tuple[str, int | None, str | None, str]]) -> None:
    """Insert several log lines in one statement."""
    if lines:
        rows = [(job_id, level, row, field, message) for level, row, field, message in lines]
        psycopg2.extras.execute_values(cur, Q["insert_log"], rows)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
