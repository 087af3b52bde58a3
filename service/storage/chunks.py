"""A job's chunk plan in the app DB: the file's layout, its chunks and their attempts, and the
attempts at job-level stages. Each chunk message goes out on the customer's turn (see `Turns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg2.extras

from service.errors import RowError
from service.storage.app_db import Q, Send, insert_logs
from service.storage.job import CHUNK_FIELDS, ChunkWork, Job
from service.storage.turns import Turns


class Chunks(Turns):
    """Chunk plans, chunk attempts and stage attempts, each with the messages it causes."""

    # -- the plan: the file's layout and its chunks ----------------------------------------

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
            insert_logs(cur, job_id, lines)
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
        finish_planning). Returns False, recording nothing, when the job is no longer running
        (cancelled or failed)."""
        with self.transaction() as cur:
            customer_id = self._lock_turns(cur, job_id)
            cur.execute(Q["job_state_for_update"], (job_id,))
            row = cur.fetchone()
            if customer_id is None or row is None or row["status"] != "running" or row["cancel_requested"]:
                return False
            if plan is not None:
                cur.execute(Q["save_plan"], (psycopg2.extras.Json(plan), job_id))
            insert_logs(cur, job_id, [(level, None, None, message) for level, message in lines])
            for chunk in chunks:
                cur.execute(Q["insert_chunk"], (job_id, *chunk))  # a rerun keeps what was sent
            self._take_turns(cur, customer_id)
            if total is not None:
                self._finish_planning(cur, job_id, total, final_stage)
            return True

    def finish_planning(self, job_id: str, chunks_total: int, final_stage: str) -> None:
        """Fix the number of chunks (the planning stage ends); when all are already done, send the final stage."""
        with self.transaction() as cur:
            self._finish_planning(cur, job_id, chunks_total, final_stage)

    def _finish_planning(self, cur: Any, job_id: str, chunks_total: int, final_stage: str) -> None:
        cur.execute(Q["finish_planning"], (chunks_total, job_id))
        row = cur.fetchone()
        if row and row["chunks_done"] >= row["chunks_total"]:
            self._send(cur, [(final_stage, (job_id,))])

    def planned_rows(self, job_id: str) -> tuple[int, bool]:
        """Rows in the chunks planned so far, and whether planning is complete (for progress)."""
        with self.transaction() as cur:
            cur.execute(Q["planned_rows"], (job_id,))
            row = cur.fetchone()
        return (int(row["planned"]), bool(row["complete"])) if row else (0, False)

    # -- chunk attempts --------------------------------------------------------------------

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
            insert_logs(cur, job_id, [("error", e.source_row, e.field, e.message) for e in logged])
            cur.execute(Q["count_chunk"], {"valid": valid, "invalid": invalid, "logged": len(logged), "id": job_id})
            row = cur.fetchone()
            if row is None:
                return False
            if row["chunks_total"] is not None and row["chunks_done"] >= row["chunks_total"]:
                self._send(cur, [(final_stage, (job_id,))])
            if customer_id is not None:
                self._take_turns(cur, customer_id)
            return True

    # -- attempts at job-level stages ------------------------------------------------------

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
