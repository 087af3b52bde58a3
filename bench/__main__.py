"""`make bench [ROWS=N] [INVALID_RATIO=0.1] [PROCESSES=2]`: the whole pipeline against a plain COPY.

Generates a deterministic users CSV, imports it through real `dramatiq actors` worker
processes (all four stages, full validation) into a fresh customer database, and in the
same run COPYs the same records as JSONB into an identical table. Prints one table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from service.config import PROJECT_ROOT, load_config
from service.db import app_dsn
from service.jobs import JobStore, migrate
from service.messages import dispatch
from service.requests import EnqueueRequest, enqueue

FIRST = ["Ann", "Bob", "Zoë", "Łukasz", "山田", "José", "Chloé", "Dmitri", "Aoife", "Mette"]
LAST = ["Lee", "Müller", "Smith, Jr.", "Østergaard", "García", "Nguyen", "O'Brien", "Kowalski"]
ROLES = ["student", "teacher", "admin"]
APP_TABLES = ("dramatiq.queue", "import_jobs", "import_logs", "import_chunks")


def generate(path: Path, rows: int, invalid_ratio: float, seed: int = 42) -> None:
    """Write a deterministic users CSV (8 columns, some non-ASCII, some quoted)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("external_id,email,first_name,last_name,role,age,active,created_at\n")
        for i in range(1, rows + 1):
            last = rng.choice(LAST)
            email = f"user{i}@example.com" if rng.random() >= invalid_ratio else f"user{i}-at-example"
            out.write(
                f'u{i},{email},{rng.choice(FIRST)},"{last}",{rng.choice(ROLES)},{rng.randint(0, 99)},'
                f"{rng.choice(('yes', 'no', 'true', '0'))},2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T09:30:00Z\n"
            )


@dataclass
class Server:
    """Fresh databases on the benchmark's Postgres server."""

    admin_dsn: str
    created: list[str] = field(default_factory=list)

    def create(self, prefix: str) -> str:
        name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
        self._run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        params = psycopg2.extensions.parse_dsn(self.admin_dsn)
        return psycopg2.extensions.make_dsn(**{**params, "dbname": name})

    def drop_all(self) -> None:
        for name in self.created:
            self._run(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _run(self, statement: sql.Composable) -> None:
        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        try:
            conn.cursor().execute(statement)
        finally:
            conn.close()


def copy_baseline(dsn: str, csv_path: Path) -> tuple[float, int]:
    """COPY the same records as JSONB into a SPEC-5 table; time only the COPY itself."""
    import csv

    job_id = str(uuid.uuid4())
    buffer = io.StringIO()
    with csv_path.open(encoding="utf-8", newline="") as source:
        reader = csv.reader(source)
        names = next(reader)
        for n, row in enumerate(reader, 1):
            data = json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False).replace("\\", "\\\\")
            buffer.write(f"{data}\t{job_id}\t{n}\n")
    rows = n
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE baseline (id bigserial PRIMARY KEY, data jsonb NOT NULL, job_id uuid NOT NULL, "
                "source_row integer NOT NULL, imported_at timestamptz NOT NULL DEFAULT now(), UNIQUE (job_id, source_row))"
            )
        buffer.seek(0)
        started = time.perf_counter()
        with conn, conn.cursor() as cur:
            cur.copy_expert("COPY baseline (data, job_id, source_row) FROM STDIN", buffer)
        return time.perf_counter() - started, rows
    finally:
        conn.close()


def app_db_bytes(dsn: str) -> int:
    """Total size of the queue and job tables (with indexes and TOAST)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT " + " + ".join(f"pg_total_relation_size('{t}')" for t in APP_TABLES))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


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
        return self.peaks


def run_pipeline(app: str, customer: str, csv_path: Path, processes: int, threads: int) -> dict[str, Any]:
    """Import the file through real worker processes; return timings, RSS peaks and app-DB growth."""
    migrate(app)
    root = csv_path.parent.parent
    map_path = root.parent / "customer_map.json"
    map_path.write_text(json.dumps({"bench": customer}))
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "CONFIG_ENV")}
    env.update(APP_DB_DSN=app, CUSTOMER_MAP_PATH=str(map_path), BLOB_ROOT=str(root), WORKER_CONCURRENCY=str(threads))
    master = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "actors", "--processes", str(processes), "--threads", str(threads)],
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)  # let the workers boot before the clock starts
    rss = PeakRss(master.pid)
    before = app_db_bytes(app)
    jobs = JobStore(app, dispatch=dispatch, maxconn=2)
    try:
        started = time.perf_counter()
        job, _ = enqueue(EnqueueRequest("bench", "users", csv_path.as_uri(), {}), jobs)
        first_inserted = None
        while True:
            current = jobs.get(job.id)
            assert current is not None
            if first_inserted is None and current.rows_total > 0:
                first_inserted = time.perf_counter() - started
            if current.finished:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        after_job = app_db_bytes(app)
        time.sleep(75)  # the sweep purges acked messages a minute after they finish
        after_purge = app_db_bytes(app)
    finally:
        peaks = rss.stop()
        os.killpg(master.pid, signal.SIGTERM)
        master.wait(timeout=60)
        jobs.close()
    if current.status != "succeeded":
        raise SystemExit(f"bench: the job failed: {current.error}")
    return {
        "seconds": elapsed,
        "rows": current.rows_total,
        "inserted": current.rows_inserted,
        "invalid": current.rows_invalid,
        "first": first_inserted or elapsed,
        "growth_job": after_job - before,
        "growth_purged": after_purge - before,
        "peaks": sorted(peaks.values(), reverse=True)[:processes],
        "queue_left": queue_rows(app),
    }


def queue_rows(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM dramatiq.queue")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def report(rows: int, size: int, copy_seconds: float, result: dict[str, Any], processes: int) -> None:
    """Print the table."""
    mb = 1024 * 1024
    pipeline_rate, copy_rate = rows / result["seconds"], rows / copy_seconds
    print(f"\nfile: {rows:,} rows, {size / mb:.1f} MiB; {processes} worker processes")
    print(f"{'':<30}{'seconds':>10}{'rows/s':>12}")
    print(f"{'COPY as JSONB (baseline)':<30}{copy_seconds:>10.2f}{copy_rate:>12,.0f}")
    print(f"{'pipeline (4 stages)':<30}{result['seconds']:>10.2f}{pipeline_rate:>12,.0f}")
    print(f"{'ratio pipeline / COPY':<30}{pipeline_rate / copy_rate:>22.2f}")
    print(f"{'rows inserted / invalid':<30}{result['inserted']:>10,.0f}{result['invalid']:>12,.0f}")
    print(f"{'enqueue -> first rows inserted':<30}{result['first']:>10.2f} s")
    for i, peak in enumerate(result["peaks"]):
        print(f"{'worker ' + str(i + 1) + ' peak RSS':<30}{peak / mb:>10.1f} MiB")
    print(
        f"{'app DB growth after the job':<30}{result['growth_job'] / mb:>10.2f} MiB ({result['growth_job'] / size:.2%} of file)"
    )
    print(
        f"{'... after the purge':<30}{result['growth_purged'] / mb:>10.2f} MiB ({result['growth_purged'] / size:.2%} of file)"
    )
    print(f"{'queue rows left':<30}{result['queue_left']:>10}")


def main() -> int:
    """Run the benchmark once."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=int(os.environ.get("ROWS", 1_000_000)))
    parser.add_argument("--invalid-ratio", type=float, default=float(os.environ.get("INVALID_RATIO", 0)))
    parser.add_argument("--processes", type=int, default=int(os.environ.get("PROCESSES", 2)))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    config = load_config()
    server = Server(os.environ.get("BENCH_DATABASE_URL") or app_dsn(config))
    work = config.data_dir / "bench"
    csv_path = work / "blobs" / "bench" / f"users-{args.rows}-{args.invalid_ratio}.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    if not csv_path.exists():
        print(f"generating {csv_path} ...", flush=True)
        generate(csv_path, args.rows, args.invalid_ratio)
    try:
        copy_seconds, rows = copy_baseline(server.create("copy"), csv_path)
        result = run_pipeline(server.create("app"), server.create("cust"), csv_path, args.processes, args.threads)
    finally:
        server.drop_all()
    report(rows, csv_path.stat().st_size, copy_seconds, result, args.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
