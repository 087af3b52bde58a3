"""The timed runs of `make bench`, one after another on the same running workers and customer DB.

append (the file into an empty table), upsert (the same file again: all unchanged), upsert10
(a twin with 10% of rows changed), undo (those jobs, newest first). Each run checks its job's
counts and the table, and stops the bench with a message when something is not as it must be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg2

from bench.data import Files
from service import control
from service.config import PROJECT_ROOT, Config
from service.errors import ImportServiceError
from service.jobs import Job, JobStore, migrate
from service.messages import dispatch
from service.pipeline import Services
from service.products import ProductRegistry
from service.requests import EnqueueRequest, enqueue
from service.supervisor import worker_command

MODES = ("append", "upsert", "upsert10", "undo")
APP_TABLES = ("dramatiq.queue", "import_jobs", "import_logs", "import_chunks")
POLL_SECONDS = 0.05
RUN_LIMIT_SECONDS = 3600.0  # a run still going after this long is reported as stuck
PURGE_WAIT_SECONDS = 75  # the sweep purges acked messages a minute after they finish
COUNTS = ("rows_inserted", "rows_updated", "rows_unchanged", "rows_duplicate", "rows_deleted", "rows_invalid")


@dataclass
class Run:
    """One timed run: rows is what it handled (for rows/s), 0 when it had nothing to do."""

    label: str
    seconds: float
    rows: int
    counts: str


@dataclass
class Results:
    """Everything the report prints besides the COPY baseline."""

    append: Run
    first_rows_seconds: float
    runs: list[Run] = field(default_factory=list)
    growth_job: int = 0
    growth_all: int = 0
    growth_purged: int = 0
    queue_left: int = 0


class PeakRss:
    """Samples worker processes' peak RSS (VmHWM) until stopped."""

    def __init__(self, master_pid: int) -> None:
        self.master_pid = master_pid
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def sample(self) -> None:
        try:
            children = psutil.Process(self.master_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            try:
                status = Path(f"/proc/{child.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), int(line.split()[1]) * 1024)

    def stop(self) -> dict[int, int]:
        self.sample()
        self._stop.set()
        self._thread.join()
        return self.peaks


class Session:
    """`dramatiq actors` workers on a fresh app DB, kept running for every run, and a view of their jobs."""

    def __init__(self, config: Config, app: str, customer: str, blob_root: Path, processes: int, threads: int) -> None:
        migrate(app)
        self.app, self.customer = app, customer
        map_path = blob_root.parent / "customer_map.json"
        map_path.write_text(json.dumps({"bench": customer}))
        env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "CONFIG_ENV")}
        env.update(APP_DB_DSN=app, CUSTOMER_MAP_PATH=str(map_path), BLOB_ROOT=str(blob_root))
        # The same command and WORKER_CONCURRENCY as `importctl worker` (make serve) gives.
        command, env = worker_command(processes, threads, env)
        self.log_path = blob_root.parent / "workers.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.master = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, start_new_session=True, stdout=self._log, stderr=subprocess.STDOUT
        )
        time.sleep(3)  # let the workers boot before any clock starts
        self.rss = PeakRss(self.master.pid)
        self.jobs = JobStore(app, dispatch=dispatch, maxconn=2)
        mine = config.with_(app_db_dsn=app, customers={"bench": customer})
        self.services = Services(mine, self.jobs, ProductRegistry.load(mine.schemas_dir), app)

    def close(self) -> dict[int, int]:
        """Stop the workers; their peak RSS by pid over the whole session."""
        peaks = self.rss.stop()
        if self.master.poll() is None:
            os.killpg(self.master.pid, signal.SIGTERM)
            self.master.wait(timeout=60)
        self.jobs.close()
        self._log.close()
        return peaks

    def job(self, job_id: str, started: float) -> Job:
        """The job's row now; stops the bench when the workers died or the run is stuck."""
        code = self.master.poll()
        if code is not None:
            raise SystemExit(f"bench: the worker processes exited (code {code}); their output: {self.log_path}")
        if time.perf_counter() - started > RUN_LIMIT_SECONDS:
            raise SystemExit(f"bench: job {job_id} is still not done after {RUN_LIMIT_SECONDS:.0f} s")
        job = self.jobs.get(job_id)
        assert job is not None, f"job {job_id} vanished"
        return job

    def failure(self, job: Job, label: str, why: str) -> SystemExit:
        """The exit of a run that went wrong: why, and the job's log lines that are not about a row."""
        lines = [line for line in self.jobs.logs(job.id) if line.row_number is None][-20:]
        text = "\n".join(f"  {line.at:%H:%M:%S.%f} {line.level}: {line.message}" for line in lines)
        return SystemExit(
            f"bench: {label} (job {job.id}, status {job.status}): {why}\n"
            f"job error: {job.error}\nimport_logs (lines without a row number):\n{text}\n"
            f"worker output: {self.log_path}"
        )

    def table_rows(self, job_id: str) -> tuple[int, int]:
        """Rows in the users table, and how many of them the job holds."""
        conn = psycopg2.connect(self.customer)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*), count(*) FILTER (WHERE job_id = %s) FROM users", (job_id,))
                total, held = cur.fetchone()
                return int(total), int(held)
        finally:
            conn.close()


def run_all(session: Session, files: Files, modes: set[str]) -> Results:
    """The append run, then the others asked for; app-DB growth around them, one purge wait at the end."""
    before = app_db_bytes(session.app)
    invalid = files.rows - files.valid
    expect = {"rows_inserted": files.valid, "rows_invalid": invalid}
    append, job, first = import_file(session, files.original, "append", {}, expect)
    results = Results(append, first)
    results.growth_job = app_db_bytes(session.app) - before
    undos: list[tuple[Job, str]] = []
    if "upsert" in modes:
        expect = {"rows_unchanged": files.valid, "rows_invalid": invalid}
        run, upsert, _ = import_file(session, files.original, "upsert, all unchanged", {"mode": "upsert"}, expect)
        results.runs.append(run)
        undos.append((upsert, "undo upsert, all unchanged"))
    if "upsert10" in modes:
        expect = {
            "rows_updated": files.changed_valid,
            "rows_unchanged": files.valid - files.changed_valid,
            "rows_invalid": invalid,
        }
        run, upsert10, _ = import_file(session, files.changed, "upsert, 10% changed", {"mode": "upsert"}, expect)
        results.runs.append(run)
        undos.append((upsert10, "undo upsert, 10% changed"))
    if "undo" in modes:
        # Newest first; every upsert undone, the append job holds all rows again.
        for undone, label in reversed(undos):
            results.runs.append(undo_job(session, undone, label, job.id, files.valid))
        results.runs.append(undo_job(session, job, "undo append", job.id, 0))
    results.growth_all = app_db_bytes(session.app) - before
    time.sleep(PURGE_WAIT_SECONDS)
    results.growth_purged = app_db_bytes(session.app) - before
    results.queue_left = queue_rows(session.app)
    return results


def import_file(
    session: Session, path: Path, label: str, options: dict[str, Any], expect: dict[str, int]
) -> tuple[Run, Job, float]:
    """Enqueue one file, time it to its final status, check its counts: (run, job, seconds to first rows)."""
    started = time.perf_counter()
    job, _ = enqueue(EnqueueRequest("bench", "users", path.as_uri(), options), session.jobs)
    first = None
    while not job.finished:
        time.sleep(POLL_SECONDS)
        job = session.job(job.id, started)
        if first is None and job.rows_total > 0:
            first = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    if job.status != "succeeded":
        raise session.failure(job, label, f"the job ended {job.status}")
    wrong = [
        f"{name} is {getattr(job, name):,}, must be {expect.get(name, 0):,}"
        for name in COUNTS
        if getattr(job, name) != expect.get(name, 0)
    ]
    if wrong:
        raise session.failure(job, label, "wrong counts: " + "; ".join(wrong))
    counts = ", ".join(
        f"{name[5:]} {getattr(job, name):,}" for name in COUNTS if name in expect or job.mode != "append"
    )
    return Run(label, elapsed, job.rows_total, counts), job, first or elapsed


def undo_job(session: Session, job: Job, label: str, owner: str, table_after: int) -> Run:
    """Undo a job, timed from the call to status `undone`; then the table must hold table_after rows, all owner's."""
    job = session.job(job.id, time.perf_counter())
    seen = len(session.jobs.logs(job.id))
    written = job.rows_inserted + job.rows_updated + job.rows_deleted
    started = time.perf_counter()
    try:
        job, complete = control.undo(session.services, job)
    except ImportServiceError as exc:
        raise session.failure(job, label, f"the undo was refused: {exc}") from None
    checked = started
    while job.status != "undone":
        time.sleep(POLL_SECONDS)
        job = session.job(job.id, started)
        if job.status == "undone":
            break
        if complete or not job.undo_pending:
            raise session.failure(job, label, "the undo ended without the job becoming undone")
        if time.perf_counter() - checked > 1:
            checked = time.perf_counter()
            errors = [line for line in session.jobs.logs(job.id)[seen:] if line.level == "error"]
            if errors:
                raise session.failure(job, label, f"the undo logged an error: {errors[0].message}")
    elapsed = time.perf_counter() - started
    if job.undone_at is None:
        raise session.failure(job, label, "the job is undone but has no undone_at")
    total, held = session.table_rows(owner)
    if total != table_after or held != table_after:
        raise session.failure(
            job,
            label,
            f"after the undo the table holds {total:,} rows, {held:,} of job {owner}; must be {table_after:,}",
        )
    said = [line.message for line in session.jobs.logs(job.id)[seen:] if line.message.startswith("undone")]
    how = "by a worker" if not complete else "in the call"
    counts = f"{how}; table now {total:,} rows; {said[-1] if said else 'no undo log line'}"
    return Run(label, elapsed, written, counts)


def app_db_bytes(dsn: str) -> int:
    """Total size of the queue and job tables (with indexes and TOAST)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT " + " + ".join(f"pg_total_relation_size('{t}')" for t in APP_TABLES))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def queue_rows(dsn: str) -> int:
    """Messages left in the queue table."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM dramatiq.queue")
            return int(cur.fetchone()[0])
    finally:
        conn.close()
