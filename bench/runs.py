"""The timed runs of `make bench`, one after another on the same running workers and customer DB.

append (the file into an empty table), upsert (the same file again: all unchanged), upsert10
(a twin with 10% of rows changed), undo (those jobs, newest first). Each run checks its job's
counts and the table, and stops the bench with a message when something is not as it must be.
A real gunicorn REST server (started as `make serve` starts it) runs throughout: small jobs of a
second customer go through its POST /enqueue beside the append run and, at the end, for the
small-job rate (bench/small.py); when the file has invalid rows, the append job's rejects.csv is
downloaded through it, timed and checked row by row. Right after the append run come the twins
(bench/twins.py): the same rows as .csv.gz (by default; TWINS= and XLSX=1 choose), .csv.zst, .jsonl
and .xlsx, each appended for a customer of its own (its own fresh database), with the workers' peak
RSS during that run alone. After those runs, three more customers append a big file each at the same
moment (bench/together.py).
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
import psycopg2

from bench import small, together, twins
from bench.data import HEADER, Files
from bench.reader import JobReader
from bench.timed import POLL_SECONDS, Run, import_file
from bench.twins import Twin
from service.config import PROJECT_ROOT, Config
from service.edges.cli.serve import commands
from service.edges.cli.supervisor import worker_command
from service.edges.tokens import new_token
from service.errors import ImportServiceError
from service.schema.products import ProductRegistry
from service.stages import control
from service.stages.messages import dispatch
from service.stages.services import Services
from service.storage.jobs import Job, JobStore, migrate

MODES = ("append", "upsert", "upsert10", "undo")
APP_TABLES = ("dramatiq.queue", "import_jobs", "import_logs", "import_chunks")
RUN_LIMIT_SECONDS = 3600.0  # a run still going after this long is reported as stuck
PURGE_WAIT_SECONDS = 75  # the sweep purges acked messages a minute after they finish
REST_START_SECONDS = 60.0  # gunicorn builds the app (and migrates) in the master before it answers
REST_STOP_SECONDS = 40.0  # over gunicorn.conf.py's graceful_timeout of 25 s
READ_TIMEOUT_SECONDS = 120.0  # no byte of the download for this long: the server is stuck
READ_CHUNK = 64 * 1024


@dataclass
class Download:
    """The append job's rejects.csv fetched over HTTP: time, data rows, body bytes, REST worker peak RSS."""

    seconds: float
    rows: int
    size: int
    rss_before: int
    rss_after: int


@dataclass
class Phase:
    """One part of the session on the workers: each process's RSS (VmRSS) at its start, by pid, and its peak RSS
    (VmHWM) during the phase alone (isolated: the high-water mark was reset at the start) or, when the kernel
    would not reset it, since the process started, read at the phase's end."""

    label: str
    start: dict[int, int]
    peaks: dict[int, int] = field(default_factory=dict)
    isolated: bool = True


@dataclass
class Results:
    """Everything the report prints besides the COPY baseline."""

    append: Run
    first_rows_seconds: float
    runs: list[Run] = field(default_factory=list)
    download: Download | None = None
    twins: list[Twin] = field(default_factory=list)
    fairness: small.Fairness | None = None
    together: together.Together | None = None
    rate: small.Rate | None = None
    growth_job: int = 0
    growth_all: int = 0
    growth_purged: int = 0
    queue_left: int = 0


class PeakRss:
    """Samples worker processes' peak RSS (VmHWM) until stopped; peaks is the highest seen per pid, even across
    a reset (which the sampler sees just before it)."""

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
        for pid, peak in self.now().items():
            self.peaks[pid] = max(self.peaks.get(pid, 0), peak)

    def now(self, key: str = "VmHWM") -> dict[int, int]:
        """Each process's VmHWM now, by pid: its peak RSS since it started or since the last reset (key="VmRSS":
        its RSS now)."""
        try:
            children = psutil.Process(self.master_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return {}
        peaks = {}
        for child in children:
            try:
                status = Path(f"/proc/{child.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith(f"{key}:"):
                    peaks[child.pid] = int(line.split()[1]) * 1024
        return peaks

    def reset(self) -> bool:
        """Sample, then set each process's VmHWM back to its RSS now (`5` into /proc/<pid>/clear_refs, Linux
        4.0+), so that now() gives the peak since; False when that failed for any of them."""
        self.sample()
        done = True
        for pid in self.now():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                done = False
        return done

    def stop(self) -> dict[int, int]:
        self.sample()
        self._stop.set()
        self._thread.join()
        return self.peaks


class Session:
    """`dramatiq actors` workers on a fresh app DB, kept running for every run, and a view of their jobs.

    Customers, each with a fresh database: "bench" (the big files), "small" (ten-row jobs) and
    `others` (by customer id: the three of together.py, and one per twin of twins.py)."""

    def __init__(
        self,
        config: Config,
        app: str,
        customer: str,
        small_customer: str,
        others: dict[str, str],
        blob_root: Path,
        processes: int,
        threads: int,
    ) -> None:
        migrate(app)
        self.app, self.customer, self.small, self.others = app, customer, small_customer, others
        self.work, self.blob_root = blob_root.parent, blob_root
        customers = {"bench": customer, small.CUSTOMER: small_customer, **others}
        map_path = self.work / "customer_map.json"
        map_path.write_text(json.dumps(customers))
        env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "CONFIG_ENV")}
        env.update(APP_DB_DSN=app, CUSTOMER_MAP_PATH=str(map_path), BLOB_ROOT=str(blob_root))
        self.env = env  # what a REST server of this session runs with too
        # The same command and WORKER_CONCURRENCY as `importctl worker` (make serve) gives.
        command, env = worker_command(processes, threads, env)
        self.log_path = self.work / "workers.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.master = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, start_new_session=True, stdout=self._log, stderr=subprocess.STDOUT
        )
        time.sleep(3)  # let the workers boot before any clock starts
        self.rss = PeakRss(self.master.pid)
        self.phases: list[Phase] = []
        self.jobs = JobStore(app, dispatch=dispatch, maxconn=2)
        self.reader = JobReader(app)  # for polling in the main thread
        mine = config.with_(app_db_dsn=app, customers=customers)
        self.services = Services(mine, self.jobs, ProductRegistry.load(mine.schemas_dir), app)

    def close(self) -> dict[int, int]:
        """Stop the workers; their peak RSS by pid over the whole session."""
        peaks = self.rss.stop()
        if self.master.poll() is None:
            os.killpg(self.master.pid, signal.SIGTERM)
            self.master.wait(timeout=60)
        self.jobs.close()
        self.reader.close()
        self._log.close()
        return peaks

    @contextmanager
    def phase(self, label: str) -> Iterator[Phase]:
        """The workers' peak RSS during the block alone: VmHWM reset to the RSS at its start (the sampler keeps
        the whole-session peak), read again at its end; the phase is added to self.phases."""
        start = self.rss.now("VmRSS")
        phase = Phase(label, start, isolated=self.rss.reset())
        yield phase
        phase.peaks = self.rss.now()
        self.rss.sample()
        self.phases.append(phase)

    def job(self, job_id: str, started: float) -> Job:
        """The job's row now; stops the bench when the workers died or the run is stuck."""
        return self.jobs_now([job_id], started)[job_id]

    def jobs_now(self, job_ids: list[str], started: float) -> dict[str, Job]:
        """These jobs' rows now, by id; stops the bench when the workers died or the run is stuck."""
        code = self.master.poll()
        if code is not None:
            raise SystemExit(f"bench: the worker processes exited (code {code}); their output: {self.log_path}")
        if time.perf_counter() - started > RUN_LIMIT_SECONDS:
            raise SystemExit(f"bench: job(s) {', '.join(job_ids)} still not done after {RUN_LIMIT_SECONDS:.0f} s")
        jobs = self.reader.get_many(job_ids)
        for job_id in job_ids:
            assert job_id in jobs, f"job {job_id} vanished"
        return jobs

    def failure(self, job: Job, label: str, why: str) -> SystemExit:
        """The exit of a run that went wrong: why, and the job's log lines that are not about a row."""
        lines = [line for line in self.jobs.logs(job.id) if line.row_number is None][-20:]
        text = "\n".join(f"  {line.at:%H:%M:%S.%f} {line.level}: {line.message}" for line in lines)
        return SystemExit(
            f"bench: {label} (job {job.id}, status {job.status}): {why}\n"
            f"job error: {job.error}\nimport_logs (lines without a row number):\n{text}\n"
            f"worker output: {self.log_path}"
        )

    def table_rows(self, job_id: str, dsn: str | None = None) -> tuple[int, int]:
        """Rows in the users table (of the bench customer, or of the customer DB dsn), and how many of them
        the job holds."""
        conn = psycopg2.connect(dsn or self.customer)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*), count(*) FILTER (WHERE job_id = %s) FROM users", (job_id,))
                total, held = cur.fetchone()
                return int(total), int(held)
        finally:
            conn.close()


def run_all(session: Session, files: Files, modes: set[str]) -> Results:
    """On one REST server: the append run with small jobs beside it, then the other runs asked for;
    app-DB growth around them, one purge wait; then three customers' big appends at once; last, the
    small-job rate on idle workers."""
    with RestServer(session.env, session.work / "rest.log") as rest:
        uri = small.write_file(session.blob_root).as_uri()
        with session.phase("warm-up (1 small job)"):
            small.warm_up(session, rest, uri)
        results = _runs(session, rest, files, modes, uri)
        with session.phase(together.LABEL):
            results.together = together.run(session, files)
        with session.phase(f"small-job rate ({small.IDLE_POSTS + small.RATE_JOBS} jobs)"):
            results.rate = small.rate(session, rest, uri)
        if rest.master.poll() is not None:
            raise SystemExit(f"bench: the REST server exited during the bench; its output: {rest.log_path}")
    return results


def _runs(session: Session, rest: RestServer, files: Files, modes: set[str], uri: str) -> Results:
    before = app_db_bytes(session.app)
    invalid = files.rows - files.valid
    expect = {"rows_inserted": files.valid, "rows_invalid": invalid}
    probe = small.FairnessProbe(session, rest, uri)
    with session.phase(f"append, {small.FAIR_JOBS} small beside"):
        append, job, first = import_file(session, files.original, "append", {}, expect, beside=probe.start)
        results = Results(append, first, fairness=probe.result())
    results.growth_job = app_db_bytes(session.app) - before
    if invalid:
        with session.phase("rejects.csv download"):
            results.download = download_rejects(session, rest, job)
    results.twins = twins.run(session, files)
    undos: list[tuple[Job, str]] = []
    if "upsert" in modes:
        expect = {"rows_unchanged": files.valid, "rows_invalid": invalid}
        label = "upsert, all unchanged"
        with session.phase(label):
            run, upsert, _ = import_file(session, files.original, label, {"mode": "upsert"}, expect)
        results.runs.append(run)
        undos.append((upsert, "undo upsert, all unchanged"))
    if "upsert10" in modes:
        expect = {
            "rows_updated": files.changed_valid,
            "rows_unchanged": files.valid - files.changed_valid,
            "rows_invalid": invalid,
        }
        label = "upsert, 10% changed"
        with session.phase(label):
            run, upsert10, _ = import_file(session, files.changed, label, {"mode": "upsert"}, expect)
        results.runs.append(run)
        undos.append((upsert10, "undo upsert, 10% changed"))
    if "undo" in modes:
        with session.phase(f"undo ({len(undos) + 1} jobs)"):
            # Newest first; every upsert undone, the append job holds all rows again.
            for undone, label in reversed(undos):
                results.runs.append(undo_job(session, undone, label, job.id, files.valid))
            results.runs.append(undo_job(session, job, "undo append", job.id, 0))
    results.growth_all = app_db_bytes(session.app) - before
    with session.phase(f"purge wait ({PURGE_WAIT_SECONDS} s idle)"):
        time.sleep(PURGE_WAIT_SECONDS)
    results.growth_purged = app_db_bytes(session.app) - before
    results.queue_left = queue_rows(session.app)
    return results


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


class RestServer:
    """`gunicorn service.rest:app` as `make serve` runs it (gunicorn.conf.py, default workers), on a free port.

    It runs in its own process group, with the session's environment (its app DB and customer
    map) and a token file of one new operator token (self.token, kept as its sha256 digest, as
    `importctl token new` makes them), until stop() or the end of the `with` block.
    """

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.log_path = log_path
        self.token, entry = new_token("*")
        tokens = log_path.with_name("api_tokens.json")
        tokens.write_text("{" + entry + "}\n")
        env = dict(env, API_TOKENS_PATH=str(tokens))
        self._log: IO[bytes] = log_path.open("wb")
        command = commands(Path(sys.executable).parent, f"{self.host}:{self.port}")["rest"]
        self.master = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, start_new_session=True, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> RestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connection(self, timeout: float = READ_TIMEOUT_SECONDS) -> http.client.HTTPConnection:
        """A new HTTP connection to the server."""
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _wait_ready(self) -> None:
        """Until GET /readyz answers 200 (the worker serves, the app DB answers); else stop the bench."""
        deadline = time.monotonic() + REST_START_SECONDS
        problem = "no answer yet"
        while time.monotonic() < deadline:
            code = self.master.poll()
            if code is not None:
                raise SystemExit(f"bench: the REST server exited at start (code {code}); its output: {self.log_path}")
            conn = self.connection(timeout=5)
            try:
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    return
                problem = f"GET /readyz answered {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                problem = f"GET /readyz: {exc!r}"
            finally:
                conn.close()
            time.sleep(0.2)
        raise SystemExit(
            f"bench: the REST server is not ready after {REST_START_SECONDS:.0f} s ({problem}); "
            f"its output: {self.log_path}"
        )

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL if it has not ended in time.

        A master that died already needs nothing: its workers exit when they see it gone."""
        try:
            if self.master.poll() is None:
                os.killpg(self.master.pid, signal.SIGTERM)
                try:
                    self.master.wait(timeout=REST_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    os.killpg(self.master.pid, signal.SIGKILL)
                    self.master.wait()
        except ProcessLookupError:
            pass
        finally:
            self._log.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def download_rejects(session: Session, rest: RestServer, job: Job) -> Download:
    """GET /jobs/<id>/rejects.csv of the append job through the session's REST server, timed; then check the file.

    The body goes to a file as it arrives (counting bytes and line ends only, so the client
    takes little CPU from the server), and is parsed as CSV afterwards: one data row per
    invalid row, in source_row order, each with its errors. The REST workers' peak RSS
    (VmHWM) is read just before the download (the server has then served only the small jobs'
    POSTs) and again after it.
    """
    target = session.work / "rejects.csv"
    rss = PeakRss(rest.master.pid)
    rss.sample()
    before = max(rss.peaks.values(), default=0)
    try:
        started = time.perf_counter()
        size, lines = fetch(rest, f"/jobs/{job.id}/rejects.csv", target)
        elapsed = time.perf_counter() - started
    finally:
        after = max(rss.stop().values(), default=0)
    if rest.master.poll() is not None:
        raise SystemExit(f"bench: the REST server exited during the download; its output: {rest.log_path}")
    if not before or not after:
        raise SystemExit(f"bench: no gunicorn worker process found to read the RSS of; its output: {rest.log_path}")
    rows = check_rejects_csv(target, job, lines)
    target.unlink()
    return Download(elapsed, rows, size, before, after)


def fetch(rest: RestServer, path: str, target: Path) -> tuple[int, int]:
    """GET path into target: (body bytes, line ends); stops the bench on any status but 200 or a cut body."""
    conn = rest.connection()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        if response.status != 200:
            text = response.read(2000).decode("utf-8", "replace")
            raise SystemExit(
                f"bench: GET {path} answered {response.status}: {text}\nREST server output: {rest.log_path}"
            )
        size = lines = 0
        with target.open("wb") as out:
            while chunk := response.read(READ_CHUNK):
                out.write(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
        return size, lines
    except (OSError, http.client.HTTPException) as exc:
        raise SystemExit(
            f"bench: GET {path} failed: {exc!r}\nREST server output: {rest.log_path}; what arrived: {target}"
        ) from None
    finally:
        conn.close()


def check_rejects_csv(path: Path, job: Job, lines: int) -> int:
    """The data rows of a downloaded rejects.csv; stops the bench unless they are the job's invalid rows."""
    expected_header = [*HEADER.strip().split(","), "errors"]

    def wrong(why: str) -> SystemExit:
        return SystemExit(f"bench: rejects.csv of job {job.id} ({lines:,} line ends): {why}; the file: {path}")

    with path.open(encoding="utf-8", newline="") as source:
        reader = csv.reader(source)
        header = next(reader, None)
        if header != expected_header:
            raise wrong(f"header {header}, must be {expected_header}")
        rows, last = 0, 0
        for row in reader:
            rows += 1
            if len(row) != len(expected_header) or not row[-1]:
                raise wrong(f"data row {rows} has {len(row)} cells (must be {len(expected_header)}) or no errors")
            number = int(row[0][1:]) if row[0][:1] == "u" and row[0][1:].isdigit() else -1
            if number <= last:
                raise wrong(f"data row {rows} is {row[0]!r}, after u{last}: not in source_row order")
            last = number
    if rows != job.rows_invalid:
        raise wrong(f"{rows:,} data rows, the job has rows_invalid {job.rows_invalid:,}")
    return rows


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
