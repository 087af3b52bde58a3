"""Turns in the app DB, two kinds: a customer's chunks take turns (at most chunks_in_flight
chunk messages out per customer, SPEC 15), and jobs of one customer and product publish in the
order they were enqueued. A job that ends gives up both, in its own transaction.
"""

from __future__ import annotations

from typing import Any

from service.storage.app_db import AppDB, Dispatch, Q, Send, insert_logs
from service.storage.job import Job


class Turns(AppDB):
    """Fair chunk turns and publish order, on the app DB's transactions."""

    def __init__(
        self,
        dsn: str,
        dispatch: Dispatch | None = None,
        maxconn: int = 8,
        publish_stage: str = "import_insert",
        chunk_stage: str = "import_validate",
        chunks_in_flight: int = 8,
    ) -> None:
        super().__init__(dsn, dispatch, maxconn)
        self._publish_stage = publish_stage
        self._chunk_stage = chunk_stage
        self._chunks_in_flight = chunks_in_flight

    # -- fair turns: at most chunks_in_flight chunk messages out per customer (SPEC 15) ----

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

    # -- publish order: a customer's jobs of one product publish in enqueue order ----------

    def wait_turn(self, job: Job) -> list[str]:
        """Park the job if earlier jobs of its customer and product may still write; their ids."""
        with self.transaction() as cur:
            cur.execute(Q["publish_order_lock"], (job.customer_id, job.product_type))
            cur.execute(Q["earlier_unfinished"], (job.id,))
            earlier = [str(r["id"]) for r in cur.fetchall()]
            if earlier:
                cur.execute(Q["start_waiting"], (job.id,))
                message = "waiting for earlier job(s) of this product to end before publishing: " + ", ".join(earlier)
                insert_logs(cur, job.id, [("info", None, None, message)])
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

    # -- a job's end gives up its turns ----------------------------------------------------

    def _end(self, cur: Any, job_id: str, row: dict[str, Any], customer_id: str | None) -> None:
        """What follows a job's failure or cancel in its transaction: its chunks go, its webhook
        is queued, jobs waiting for it wake and its customer's next chunks get its turns."""
        cur.execute(Q["delete_chunks"], (job_id,))
        self._send_webhook(cur, job_id, row["status"])  # after any message drop, which would take it too
        self._wake_waiters(cur, row["customer_id"], row["product_type"])
        if customer_id is not None:
            self._take_turns(cur, customer_id)  # its chunks out no longer count
