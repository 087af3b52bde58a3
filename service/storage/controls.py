"""Cancel and undo in the app DB: the requests, and the ends they bring, each written with the
messages it causes (cleanup, undo, webhook) in one transaction.
"""

from __future__ import annotations

from service.storage.app_db import Q, insert_logs
from service.storage.turns import Turns


class Controls(Turns):
    """Cancel and undo requests on a job, and the job's end when they finish."""

    # -- cancel ----------------------------------------------------------------------------

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
            insert_logs(cur, job_id, [("info", None, None, message)])
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
            insert_logs(cur, job_id, [("info", None, None, "cancelled; its rows are deleted")])
            self._end(cur, job_id, dict(row, status="cancelled"), customer_id)
            return True

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
            insert_logs(cur, job_id, [("info", None, None, message)])
            self._send_webhook(cur, job_id, "undone")
            return True

    def end_undo_request(self, job_id: str, message: str | None = None) -> None:
        """Clear a worker undo that was refused or failed, logging why."""
        with self.transaction() as cur:
            cur.execute(Q["end_undo_request"], (job_id,))
            if message:
                insert_logs(cur, job_id, [("error", None, None, message)])
