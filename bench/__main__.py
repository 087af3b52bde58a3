"""`make bench [ROWS=N] [INVALID_RATIO=0.1] [PROCESSES=2] [MODES=append,...] [TWINS=gz,zst,jsonl] [XLSX=1]
[UPLOADS=0|only] [FEEDS=0|only]`: the pipeline against a plain COPY, and uploads over tus.

Generates a deterministic users CSV (and a twin with 10% of its rows changed), COPYs its
records as JSONB into a plain table for the baseline, then on one set of real `dramatiq
actors` worker processes (as many threads each as the configuration gives) and one fresh
customer database: appends the file, upserts it again (all unchanged), upserts the twin,
and undoes those jobs newest first. A real gunicorn REST server runs throughout: through its
POST /enqueue, ten 10-row jobs of a second customer run beside the append job (fairness). Then
three more customers (each with a fresh database) append two thirds of the file each, all
enqueued at once (each one's rows/s), and at the end 200 small jobs are enqueued as fast as
one client can (the small-job rate, SPEC 15). With invalid rows, it also downloads the append
job's rejects.csv through it. Right after the CSV append come the twins of --twins (TWINS=, default
gz; XLSX=1 adds xlsx): the same rows as .csv.gz, .csv.zst, .jsonl or .xlsx (each written once, cached
next to the CSV), each appended for a customer of its own, timed the same way, with the workers' peak
RSS during that run alone; before them, when one has a target (gz, zst, jsonl), the plain CSV is
appended the same way for their reference (bench/twins.py). Last, on the same workers and a REST server of their
own, come the uploads (bench/uploads.py, SPEC 19; UPLOADS=0 or --uploads off leaves them out, UPLOADS=only or
--uploads only runs them alone, with no COPY and no import run): 1 GiB over tus by one client, in one PATCH and in
64 MiB PATCHes, then by eight clients at once while GET /healthz and POST /enqueue are timed and every REST
process's RSS is sampled. Then, with the workers stopped, the feeds (bench/feeds.py, SPEC 20; FEEDS=0 or --feeds off
leaves them out, FEEDS=only or --feeds only runs them alone, with no workers): one run of a feed over 100,000 files
all imported already, on the blob root and on S3 (SeaweedFS), each on an app DB of its own. Prints one table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from bench import data, feeds, small, together, twins, uploads
from bench.runs import MODES, Phase, Results, Run, Session, run_all
from service.config import load_config
from service.storage.db import app_dsn


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
    job_id = str(uuid.uuid4())
    buffer = io.StringIO()
    with csv_path.open(encoding="utf-8", newline="") as source:
        reader = csv.reader(source)
        names = next(reader)
        for n, row in enumerate(reader, 1):
            text = json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False).replace("\\", "\\\\")
            buffer.write(f"{text}\t{job_id}\t{n}\n")
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


MB = 1024 * 1024


def report(
    files: data.Files,
    copy_seconds: float,
    result: Results,
    peaks: dict[int, int],
    phases: list[Phase],
    processes: int,
    threads: int,
) -> None:
    """Print the table."""
    rows, size = files.rows, files.original.stat().st_size
    copy_rate = rows / copy_seconds
    pipeline_rate = rows / result.append.seconds
    print(f"\nfile: {rows:,} rows, {size / MB:.1f} MiB; {processes} worker processes x {threads} threads")
    print(f"{'':<30}{'seconds':>10}{'rows/s':>12}{'x COPY':>9}  counts")
    print(f"{'COPY as JSONB (baseline)':<30}{copy_seconds:>10.2f}{copy_rate:>12,.0f}")
    print(f"{'pipeline (append)':<30}{result.append.seconds:>10.2f}{pipeline_rate:>12,.0f}")
    print(f"{'ratio pipeline / COPY':<30}{pipeline_rate / copy_rate:>22.2f}")
    print(f"{'rows inserted / invalid':<30}{files.valid:>10,.0f}{rows - files.valid:>12,.0f}")
    print(f"{'enqueue -> first rows inserted':<30}{result.first_rows_seconds:>10.2f} s")
    for run in result.runs:
        print(_run_line(run, copy_rate))
    for line in twins.report_lines(result.twins, copy_rate, processes, 30):
        print(line)
    if result.download is not None:
        got = result.download
        print(f"{'rejects.csv download':<30}{got.seconds:>10.2f} s{got.rows:>10,} rows{got.size / MB:>8.1f} MiB")
        print(
            f"{'REST worker peak RSS':<30}{got.rss_before / MB:>10.1f} -> {got.rss_after / MB:.1f} MiB"
            " (before -> after the download)"
        )
    workers = sorted(peaks, key=peaks.__getitem__, reverse=True)[:processes]  # the master's biggest children
    for i, pid in enumerate(workers):
        print(f"{'worker ' + str(i + 1) + ' peak RSS':<30}{peaks[pid] / MB:>10.1f} MiB (whole session)")
    for line in phase_lines(phases, workers):
        print(line)
    growth = (
        ("app DB growth after the job", result.growth_job, "of file"),
        ("... after all runs", result.growth_all, "of one file"),
        ("... after the purge", result.growth_purged, "of one file"),
    )
    for label, grown, of in growth:
        print(f"{label:<30}{grown / MB:>10.2f} MiB ({grown / size:.2%} {of})")
    print(f"{'queue rows left':<30}{result.queue_left:>10}")
    spec15 = (
        small.fairness_lines(result.fairness, 33)
        + together.report_lines(result.together, 33)
        + small.rate_lines(result.rate, 33)
    )
    for line in spec15:
        print(line)


def phase_lines(phases: list[Phase], workers: list[int]) -> list[str]:
    """The workers' peak RSS in each phase alone, workers in the whole-session lines' order, with their RSS at the
    phase's start (what they still held from before)."""
    if not phases:
        return []
    names = "worker " + " / ".join(str(i + 1) for i in range(len(workers)))
    lines = [f"{'workers peak RSS per phase':<30}{names:>14} (each phase alone; from: the RSS at its start)"]
    for phase in phases:
        peaks = " / ".join(f"{phase.peaks.get(pid, 0) / MB:.1f}" for pid in workers)
        start = " / ".join(f"{phase.start.get(pid, 0) / MB:.1f}" for pid in workers)
        alone = "" if phase.isolated else "; VmHWM not reset: peak since the worker started"
        lines.append(f"{'  ' + phase.label:<30}{peaks:>14} MiB (from {start}{alone})")
    return lines


def _run_line(run: Run, copy_rate: float) -> str:
    if not run.rows:
        return f"{run.label:<30}{run.seconds:>10.2f}{'-':>12}{'-':>9}  {run.counts}"
    rate = run.rows / run.seconds
    return f"{run.label:<30}{run.seconds:>10.2f}{rate:>12,.0f}{rate / copy_rate:>9.2f}  {run.counts}"


def parse_modes(text: str) -> set[str]:
    """The runs asked for; append always runs, the others build on its table."""
    modes = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(modes - set(MODES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {', '.join(unknown)} (known: {', '.join(MODES)})")
    return modes | {"append"}


def parse_twins(text: str) -> tuple[str, ...]:
    """The twins asked for, in the order they run; "none" (or nothing) for none."""
    kinds = {name.strip() for name in text.split(",") if name.strip()} - {"none"}
    unknown = sorted(kinds - set(data.TWIN_SUFFIXES))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown twin(s) {', '.join(unknown)} (known: {', '.join(data.TWIN_SUFFIXES)}, or none)"
        )
    return tuple(kind for kind in data.TWIN_SUFFIXES if kind in kinds)


def parse_switch(text: str) -> str:
    """Whether a part (the uploads, the feeds) runs: "on" (also 1, yes), "off" (also 0, no, none) or "only" (only
    the parts saying so run)."""
    value = text.strip().lower()
    for meaning, words in (("on", ("on", "1", "yes", "")), ("off", ("off", "0", "no", "none")), ("only", ("only",))):
        if value in words:
            return meaning
    raise argparse.ArgumentTypeError(f"must be on, off or only, not {text!r}")


def main() -> int:
    """Run the benchmark once."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=int(os.environ.get("ROWS", 1_000_000)))
    parser.add_argument("--invalid-ratio", type=float, default=float(os.environ.get("INVALID_RATIO", 0)))
    parser.add_argument("--processes", type=int, default=int(os.environ.get("PROCESSES", 2)))
    parser.add_argument("--threads", type=int, help="threads per process (default: worker_concurrency of the config)")
    parser.add_argument(
        "--xlsx",
        action="store_true",
        default=os.environ.get("XLSX", "") not in ("", "0"),
        help="also append an .xlsx of the same rows (generated once, cached) for another customer (as --twins xlsx)",
    )
    parser.add_argument(
        "--twins",
        type=parse_twins,
        default=os.environ.get("TWINS") or "gz",
        help=f"twins of the file to append after it, comma-separated, each for a customer of its own "
        f"(default: gz; known: {','.join(data.TWIN_SUFFIXES)}, or none)",
    )
    parser.add_argument(
        "--modes",
        type=parse_modes,
        default=os.environ.get("MODES", ",".join(MODES)),
        help=f"runs, comma-separated (default: all of {','.join(MODES)}); append always runs",
    )
    parser.add_argument(
        "--uploads",
        type=parse_switch,
        default=os.environ.get("UPLOADS", "on"),
        help="the tus uploads of SPEC 19 after the other runs: on (default), off, or only (no COPY, no import run)",
    )
    parser.add_argument(
        "--feeds",
        type=parse_switch,
        default=os.environ.get("FEEDS", "on"),
        help="the feed runs of SPEC 20 at the end: on (default), off, or only (no workers, no other run)",
    )
    args = parser.parse_args()
    only = "only" in (args.uploads, args.feeds)
    imports = not only
    with_uploads = args.uploads == "only" or (args.uploads == "on" and not only)
    with_feeds = args.feeds == "only" or (args.feeds == "on" and not only)
    config = load_config()
    threads = args.threads or config.worker_concurrency
    server = Server(os.environ.get("BENCH_DATABASE_URL") or app_dsn(config))
    work = config.data_dir / "bench"
    files, customers = None, []
    if imports:
        files = data.prepare(work / "blobs" / "bench", args.rows, args.invalid_ratio)
        kinds = tuple(kind for kind in data.TWIN_SUFFIXES if kind in args.twins or (kind == "xlsx" and args.xlsx))
        files = data.prepare_twins(files, kinds)
        customers = [*together.CUSTOMERS, *twins.customers(files)]
    if with_uploads:
        customers.append(uploads.CUSTOMER)
    result, uploaded, copy_seconds = None, None, 0.0
    try:
        if files is not None:
            copy_seconds = copy_baseline(server.create("copy"), files.original)[0]
        if imports or with_uploads:
            session = Session(
                config,
                server.create("app"),
                server.create("cust"),
                server.create("small"),
                {customer: server.create(customer) for customer in customers},
                work / "blobs",
                args.processes,
                threads,
            )
            try:
                result = None if files is None else run_all(session, files, args.modes)
                uploaded = uploads.run(session, work) if with_uploads else None
            finally:
                peaks = session.close()
        if files is not None and result is not None:
            report(files, copy_seconds, result, peaks, session.phases, args.processes, threads)
        else:
            print()
        for line in uploads.report_lines(uploaded, 33):
            print(line)
        # Printed before the feeds start: their minutes on moto's server put nothing above at risk.
        sys.stdout.flush()
        for line in feeds.report_lines(feeds.run(server.create, work) if with_feeds else None, 33):
            print(line)
    finally:
        server.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
