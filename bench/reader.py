"""Job rows for the bench's polling, read on one kept connection.

Polling through JobStore would open a new server connection for every read (its pool keeps
no idle connection), and a backend start costs the 2-core machine more CPU than the read
itself: at 20-50 reads a second that would be taken from the runs being measured.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extras

from service.storage.jobs import Job


class JobReader:
    """import_jobs rows by id, on one autocommit connection (use one reader per thread)."""

    def __init__(self, dsn: str) -> None:
        self._conn = psycopg2.connect(dsn, application_name="import-bench")
        self._conn.autocommit = True

    def get(self, job_id: str) -> Job | None:
        """The job's row now, or None."""
        return self.get_many([job_id]).get(job_id)

    def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        """The rows of these jobs now, by id."""
        with self._conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT * FROM import_jobs WHERE id = ANY(%s::uuid[])", (job_ids,))
            jobs = [Job.from_row(row) for row in cur.fetchall()]
        return {job.id: job for job in jobs}

    def count_final(self, job_ids: list[str], final: tuple[str, ...]) -> int:
        """How many of these jobs have one of the final statuses."""
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM import_jobs WHERE id = ANY(%s::uuid[]) AND status = ANY(%s)",
                (job_ids, list(final)),
            )
            return int(cur.fetchone()[0])

    def sessions(self) -> int:
        """Connections ever opened to this database (pg_stat_database; a closed one counts at once)."""
        with self._conn.cursor() as cur:
            cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            return int(cur.fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
