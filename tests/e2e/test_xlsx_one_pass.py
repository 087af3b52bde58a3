"""XLSX read in one pass, through real worker processes: the fetch stage scans the sheet once
and stores each chunk's records in the customer DB (`import_service.chunk_cells`), and each
validate chunk reads its own back.

- A 300k-row sheet, its workers (under `importctl worker`, which restarts them) SIGKILLed in
  the middle of the scan and again in the middle of validation: the job still ends with
  every row exactly once, with the right data, and no stored cells left behind. After the
  planning the file is overwritten (same size and mtime), so the chunks must have read
  their stored cells, not the sheet.
- The stored cells of a job are gone once it ends, whichever way: append (streaming and
  atomic), upsert, replace, failed at the end (on_invalid=fail) or in the middle of the scan
  (a damaged sheet), cancelled while validating or while scanning, dry run; and the purge
  deletes whatever is older than two days.

A trigger in each customer DB notes every write to `chunk_cells`, so the tests also check
that the cells were stored at all (each chunk's), not only that none are left.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import psutil
import pytest

from service.config import Config, load_customer_map
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages import control
from service.stages.cleanup import purge_history
from service.stages.enqueue import check_request, enqueue
from service.stages.messages import dispatch
from service.stages.services import Services
from service.storage.jobs import Job, JobStore, migrate
from service.storage.store import Q
from tests.conftest import Databases, query, until, wait_finished
from tests.e2e.test_faults import end, start_supervisor
from tests.integration.conftest import pipeline_env

BIG_ROWS = 300_000
BIG_CHUNK_ROWS = 20_000  # 15 chunks
BIG_CHUNKS = BIG_ROWS // BIG_CHUNK_ROWS
SMALL_CHUNK_ROWS = 50
FINAL = ("succeeded", "failed", "cancelled", "undone")
HEADER = ["external_id", "email", "first_name", "last_name", "role", "age", "active", "created_at"]
WHEN = datetime.datetime(2024, 3, 1, 9, 30)  # a native date cell: stored tagged, read back as a datetime
SMALL_CUSTOMERS = (
    "append",
    "atomic",
    "upsert",
    "replace",
    "fail_end",
    "fail_scan",
    "cancel_validate",
    "dry",
    "purge",
)

# Notes every write to chunk_cells (the service's own DDL creates the table first).
AUDIT = """
CREATE TABLE public.cells_seen (
    job_id uuid NOT NULL, chunk_no integer NOT NULL, op text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION public.note_cells() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.cells_seen (job_id, chunk_no, op) VALUES (NEW.job_id, NEW.chunk_no, TG_OP);
    RETURN NULL;
END $$;
CREATE TRIGGER note_cells AFTER INSERT OR UPDATE ON import_service.chunk_cells
FOR EACH ROW EXECUTE FUNCTION public.note_cells();
"""


def write_users_xlsx(path: Path, rows: int, invalid: frozenset[int] = frozenset()) -> Path:
    """A users sheet (openpyxl, write-only) of `rows` rows; rows in `invalid` get a bad email."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("users")
    sheet.append(HEADER)
    for i in range(1, rows + 1):
        email = "broken" if i in invalid else f"user{i}@example.com"
        sheet.append([f"u{i}", email, "Zoë", "Müller", "student", i % 90, True, WHEN])
    book.save(path)
    return path


def damage_row(path: Path, sheet_row: int) -> Path:
    """Rewrite the package so that the sheet's row `sheet_row` has a row number that is not one."""
    with zipfile.ZipFile(path) as package:
        parts = {info.filename: package.read(info) for info in package.infolist()}
    name = next(n for n in parts if n.startswith("xl/worksheets/sheet"))
    before = f'<row r="{sheet_row}"'.encode()
    assert parts[name].count(before) == 1, "openpyxl wrote the rows differently than expected"
    parts[name] = parts[name].replace(before, b'<row r="bogus"')
    damaged = path.with_name(f"damaged-{path.name}")
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_DEFLATED) as package:
        for part, content in parts.items():
            package.writestr(part, content)
    return damaged


def garble(path: Path) -> None:
    """Overwrite a file with zeros in place, keeping its size and modification time."""
    info = path.stat()
    with path.open("r+b") as out:
        remaining = info.st_size
        while remaining:
            remaining -= out.write(bytes(min(remaining, 1 << 20)))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (info.st_size, info.st_mtime_ns)


@dataclass
class Stand:
    """An app DB, customer DBs (with the cells audit), a blob area and the in-process services."""

    env: dict[str, str]
    app: str
    customers: dict[str, str]
    config: Config
    jobs: JobStore
    services: Services
    files: Path

    def enqueue(self, customer: str, path: Path, options: dict[str, Any] | None = None) -> str:
        own = self.config.blob_root / customer / path.name
        if not own.exists():
            os.link(path, own)  # a hard link: a symlink out of the blob area is refused
        body: dict[str, Any] = {"customer_id": customer, "product_type": "users", "blob_uri": blob.uri_for(own)}
        if options is not None:
            body["options"] = options
        job, _ = enqueue(check_request(body, self.config, self.services.products), self.jobs)
        return job.id

    def wait(self, job_id: str, timeout: float = 120) -> Job:
        return wait_finished(self.jobs, job_id, timeout)

    def until(self, condition: Callable[[], object], timeout: float = 60) -> None:
        until(condition, timeout, interval=0.005)

    def job_row(self, job_id: str) -> dict[str, Any]:
        columns = ("status", "stage_running", "chunks_total", "chunks_done")
        (row,) = query(self.app, f"SELECT {', '.join(columns)} FROM import_jobs WHERE id = %s", (job_id,))
        return dict(zip(columns, row, strict=True))

    def cells(self, customer: str, job_id: str | None = None) -> int:
        """Stored chunk-cell rows of the job (of every job when None) in the customer's DB."""
        sql = "SELECT count(*) FROM import_service.chunk_cells"
        if job_id is None:
            return int(query(self.customers[customer], sql)[0][0])
        return int(query(self.customers[customer], sql + " WHERE job_id = %s", (job_id,))[0][0])

    def seen(self, customer: str, job_id: str) -> dict[int, list[str]]:
        """Every write to the job's chunk cells, per chunk: ['INSERT', 'UPDATE', ...] in order."""
        writes: dict[int, list[str]] = {}
        for chunk_no, op in query(
            self.customers[customer],
            "SELECT chunk_no, op FROM public.cells_seen WHERE job_id = %s ORDER BY at, chunk_no",
            (job_id,),
        ):
            writes.setdefault(chunk_no, []).append(op)
        return writes

    def quiet_since(self, customer: str, job_id: str) -> float:
        """Seconds since the last write to the job's chunk cells."""
        rows = query(
            self.customers[customer],
            "SELECT extract(epoch FROM clock_timestamp() - max(at)) FROM public.cells_seen WHERE job_id = %s",
            (job_id,),
        )
        return float(rows[0][0]) if rows[0][0] is not None else 0.0

    def rows(self, customer: str, job_id: str) -> tuple[int, int, int | None, int | None, int]:
        """(rows, distinct source_row, min, max, rows whose data is not the source row's) of the job."""
        (row,) = query(
            self.customers[customer],
            "SELECT count(*), count(DISTINCT source_row), min(source_row), max(source_row), "
            "count(*) FILTER (WHERE data->>'external_id' IS DISTINCT FROM 'u' || source_row "
            "OR data->>'email' IS DISTINCT FROM 'user' || source_row || '@example.com' "
            "OR (data->>'age')::int IS DISTINCT FROM source_row %% 90 "
            "OR data->>'created_at' IS DISTINCT FROM '2024-03-01T09:30:00Z' "
            "OR data->>'first_name' IS DISTINCT FROM 'Zoë') "
            "FROM users WHERE job_id = %s",
            (job_id,),
        )
        return row


def make_stand(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory, names: tuple[str, ...], chunk_rows: int
) -> Iterator[Stand]:
    app = databases.create("app")
    customers = {name: databases.create(name) for name in names}
    tmp = tmp_path_factory.mktemp("xlsx1pass")
    root = tmp / "blobs"
    files = tmp / "files"
    files.mkdir()
    for name, dsn in customers.items():
        (root / name).mkdir(parents=True)
        query(dsn, Q["service_schema"])
        query(dsn, AUDIT)
    (tmp / "customer_map.json").write_text(json.dumps(customers))
    migrate(app)
    env = pipeline_env(app, tmp / "customer_map.json", root, CHUNK_ROWS=str(chunk_rows), WORKER_CONCURRENCY="2")
    config = Config(app_db_dsn=app, blob_root=root.resolve(), customers=load_customer_map(tmp / "customer_map.json"))
    jobs = JobStore(app, dispatch=dispatch)
    try:
        yield Stand(
            env,
            app,
            customers,
            config,
            jobs,
            Services(config, jobs, ProductRegistry.load(config.schemas_dir), app),
            files,
        )
    finally:
        jobs.close()


def kill_workers(supervisor: subprocess.Popen[bytes]) -> int:
    """SIGKILL the worker processes under `importctl worker` (it restarts them); how many."""
    killed = 0
    for master in psutil.Process(supervisor.pid).children():  # `dramatiq actors`
        for worker in master.children():
            worker.send_signal(signal.SIGKILL)
            killed += 1
    return killed


# --- a 300k-row sheet, SIGKILL mid-scan and mid-validation -----------------------------------


@pytest.fixture(scope="module")
def big(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    yield from make_stand(databases, tmp_path_factory, ("acme", "cancel_scan"), BIG_CHUNK_ROWS)


@pytest.fixture(scope="module")
def big_file(big: Stand) -> Path:
    return write_users_xlsx(big.files / "big.xlsx", BIG_ROWS)  # ~20 s, once per module


@pytest.mark.slow
def test_a_big_sheet_killed_mid_scan_and_mid_validation_lands_every_row_once(big: Stand, big_file: Path) -> None:
    own = big.config.blob_root / "acme" / "big.xlsx"
    shutil.copyfile(big_file, own)  # a copy of its own: step 2 overwrites it
    supervisor = start_supervisor(big.env)
    try:
        job_id = big.enqueue("acme", own)
        # 1. In the middle of the scan: a few chunks' cells are stored, planning has not ended.
        big.until(lambda: big.job_row(job_id)["stage_running"] == "fetch" and big.cells("acme", job_id) >= 2)
        assert kill_workers(supervisor) >= 1
        state = big.job_row(job_id)
        assert state["status"] == "running" and state["chunks_total"] is None, state  # killed mid-scan
        stored_before = big.cells("acme", job_id)
        assert 2 <= stored_before < BIG_CHUNKS

        # 2. In the middle of validation (of the rerun's plan): some chunks done, not all.
        def mid_validation() -> bool:
            row = big.job_row(job_id)
            total = row["chunks_total"]
            return row["status"] in FINAL or (total is not None and 1 <= row["chunks_done"] < total)

        big.until(mid_validation, timeout=120)
        assert kill_workers(supervisor) >= 1
        state = big.job_row(job_id)
        assert state["status"] == "running" and state["chunks_done"] < BIG_CHUNKS, state  # killed mid-job
        assert state["chunks_total"] == BIG_CHUNKS
        # From now on the chunks read their stored cells, never the sheet: overwrite the file
        # with zeros, keeping its size and mtime (what the chunks check), and the job still succeeds.
        garble(own)

        job = big.wait(job_id, timeout=180)
        assert job.status == "succeeded", job.error
        counts = (job.rows_total, job.rows_valid, job.rows_invalid, job.rows_inserted)
        assert counts == (BIG_ROWS, BIG_ROWS, 0, BIG_ROWS)
        assert big.rows("acme", job_id) == (BIG_ROWS, BIG_ROWS, 1, BIG_ROWS, 0)
        assert big.cells("acme", job_id) == 0
        assert big.cells("acme") == 0
        seen = big.seen("acme", job_id)
        assert sorted(seen) == list(range(BIG_CHUNKS))  # every chunk's cells were stored
        assert seen[0][0] == "INSERT" and len(seen[0]) >= 2  # and stored again by the fetch's rerun
    finally:
        end(supervisor)


@pytest.mark.slow
def test_a_job_cancelled_mid_scan_leaves_no_cells(big: Stand, big_file: Path) -> None:
    supervisor = start_supervisor(big.env)
    try:
        job_id = big.enqueue("cancel_scan", big_file)
        big.until(lambda: big.job_row(job_id)["stage_running"] == "fetch" and big.cells("cancel_scan", job_id) >= 1)
        job, complete = control.cancel(big.services, big.jobs.get(job_id))
        assert complete and job.status == "cancelled"
        assert big.job_row(job_id)["chunks_total"] is None  # cancelled while the scan went on
        cancelled_at = time.monotonic()
        # The scan goes on to its next batch of chunks (add_chunks every 8 chunks, which sees
        # the job cancelled and stops it), storing their cells meanwhile: wait until it has stopped.
        big.until(lambda: big.quiet_since("cancel_scan", job_id) > 3, timeout=60)
        assert big.cells("cancel_scan", job_id) == 0, (
            f"{big.cells('cancel_scan', job_id)} chunk-cell rows of the cancelled job are left "
            f"{time.monotonic() - cancelled_at:.1f} s after the cancel; written: {big.seen('cancel_scan', job_id)}"
        )
        assert big.rows("cancel_scan", job_id)[0] == 0
        assert big.jobs.get(job_id).status == "cancelled"
    finally:
        end(supervisor)


# --- small sheets: the cells go whichever way the job ends ----------------------------------


@pytest.fixture(scope="module")
def small(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    yield from make_stand(databases, tmp_path_factory, SMALL_CUSTOMERS, SMALL_CHUNK_ROWS)


@pytest.fixture(scope="module")
def small_workers(small: Stand) -> Iterator[subprocess.Popen[bytes]]:
    supervisor = start_supervisor(small.env)
    yield supervisor
    end(supervisor)


@pytest.fixture(scope="module")
def sheet(small: Stand) -> Path:
    """320 rows, rows 7 and 260 invalid: 7 chunks of 50 rows at most."""
    return write_users_xlsx(small.files / "users.xlsx", 320, invalid=frozenset({7, 260}))


def stored_every_chunk(stand: Stand, customer: str, job_id: str, chunks: int) -> None:
    assert sorted(stand.seen(customer, job_id)) == list(range(chunks)), "the scan did not store each chunk's cells"


@pytest.mark.parametrize(
    ("customer", "options", "counts"),
    [
        ("append", None, (318, 0, 0)),
        ("atomic", {"atomic": True}, (318, 0, 0)),
        ("upsert", {"mode": "upsert"}, (318, 0, 0)),
        ("replace", {"mode": "replace", "on_invalid": "skip"}, (318, 0, 0)),
    ],
)
def test_a_succeeded_job_leaves_no_cells(
    small: Stand,
    small_workers: object,
    sheet: Path,
    customer: str,
    options: dict[str, Any] | None,
    counts: tuple[int, int, int],
) -> None:
    job = small.wait(small.enqueue(customer, sheet, options), timeout=60)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid) == (320, 318, 2)
    assert (job.rows_inserted, job.rows_updated, job.rows_deleted) == counts
    (row,) = query(
        small.customers[customer],
        "SELECT count(*), count(DISTINCT source_row) FROM users WHERE job_id = %s AND source_row NOT IN (7, 260)",
        (job.id,),
    )
    assert row == (318, 318)
    stored_every_chunk(small, customer, job.id, 7)
    assert small.cells(customer, job.id) == 0
    assert small.cells(customer) == 0


def test_a_job_failed_at_the_end_leaves_no_cells(small: Stand, small_workers: object, sheet: Path) -> None:
    job = small.wait(small.enqueue("fail_end", sheet, {"on_invalid": "fail"}), timeout=60)
    assert job.status == "failed"
    assert "on_invalid is 'fail'" in job.error
    stored_every_chunk(small, "fail_end", job.id, 7)
    assert small.rows("fail_end", job.id)[0] == 0
    assert small.cells("fail_end") == 0


def test_a_job_failed_in_the_middle_of_the_scan_leaves_no_cells(small: Stand, small_workers: object) -> None:
    # The sheet's XML is parsed 256 KiB at a time (about 650 rows here), so the damage goes
    # far enough down that the blocks before it give rows, and their chunks' cells are stored.
    rows = 2_000
    damaged = damage_row(write_users_xlsx(small.files / "long.xlsx", rows), rows - 99)
    job = small.wait(small.enqueue("fail_scan", damaged), timeout=60)
    assert job.status == "failed"
    assert "damaged" in job.error
    stored = sorted(small.seen("fail_scan", job.id))
    assert 10 <= len(stored) < rows // SMALL_CHUNK_ROWS and stored == list(range(len(stored))), stored
    assert small.rows("fail_scan", job.id)[0] == 0
    assert small.cells("fail_scan") == 0


def test_a_dry_run_leaves_no_cells(small: Stand, small_workers: object, sheet: Path) -> None:
    job = small.wait(small.enqueue("dry", sheet, {"dry_run": True}), timeout=60)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_valid, job.rows_invalid, job.rows_inserted) == (320, 318, 2, 0)
    stored_every_chunk(small, "dry", job.id, 7)
    assert query(small.customers["dry"], "SELECT count(*) FROM users") == [(0,)]
    assert small.cells("dry") == 0


def test_a_job_cancelled_while_validating_leaves_no_cells(small: Stand, small_workers: object) -> None:
    rows = 30_000  # 600 chunks: validation runs for seconds
    path = write_users_xlsx(small.files / "cancel.xlsx", rows)
    job_id = small.enqueue("cancel_validate", path)

    def planned_and_validating() -> bool:
        row = small.job_row(job_id)
        total = row["chunks_total"]
        return row["status"] in FINAL or (total is not None and 1 <= row["chunks_done"] < total)

    small.until(planned_and_validating, timeout=60)
    state = small.job_row(job_id)
    assert state["status"] == "running", state
    assert small.cells("cancel_validate", job_id) > 0  # the cells are there while it runs
    job, complete = control.cancel(small.services, small.jobs.get(job_id))
    assert complete and job.status == "cancelled"
    # SPEC 13: within 10 s nothing of it is left
    small.until(lambda: small.cells("cancel_validate", job_id) == 0, timeout=10)
    time.sleep(2)  # a chunk that was in flight has ended by now
    assert small.cells("cancel_validate") == 0
    assert small.rows("cancel_validate", job_id)[0] == 0
    stored_every_chunk(small, "cancel_validate", job_id, rows // SMALL_CHUNK_ROWS)


def test_the_purge_deletes_cells_older_than_two_days(small: Stand, sheet: Path) -> None:
    dsn = small.customers["purge"]
    old, fresh = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    query(
        dsn,
        "INSERT INTO import_service.chunk_cells (job_id, chunk_no, cells, stored_at) VALUES "
        "(%s, 0, 'x', now() - interval '2 days 1 minute'), (%s, 0, 'x', now() - interval '47 hours')",
        (old, fresh),
    )
    config = small.config.with_(customers={"purge": small.config.customers["purge"]})
    purge_history(Services(config, small.jobs, small.services.products, small.app))
    assert query(dsn, "SELECT job_id::text FROM import_service.chunk_cells") == [(fresh,)]
