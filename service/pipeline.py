"""The four stages of an import, as plain functions: fetch, parse, validate, insert.

Each stage loads its job by id, does one step, and names the next stage; the JobStore
writes that message in the same transaction as the state it follows from. Every stage
is safe to run twice.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from service import blob, formats
from service.config import Config
from service.db import customer_dsn
from service.errors import CustomerDBUnavailable, FileRejected, JobFailed, RowError
from service.jobs import ChunkWork, Job, JobStore
from service.products import Product, ProductRegistry
from service.store import CustomerStore

log = logging.getLogger(__name__)

FETCH, PARSE, VALIDATE, INSERT = "import_fetch", "import_parse", "import_validate", "import_insert"
# Attempts that never ended (the worker died) before a chunk or stage fails its job.
MAX_CRASHES = 3
# A chunk also ends at this many bytes, so one chunk's COPY buffer stays small whatever the rows' size.
CHUNK_BYTES = 32 * 1024 * 1024
CHUNKS_PER_TRANSACTION = 8


@dataclass
class Services:
    """What the stages need, built once per process and passed in."""

    config: Config
    jobs: JobStore
    products: ProductRegistry
    app_dsn: str

    def customer(self, customer_id: str) -> CustomerStore:
        """The store of one customer's database."""
        return CustomerStore(customer_dsn(self.config, customer_id, self.app_dsn))

    @cached_property
    def limits(self) -> formats.Limits:
        """File limits from the configuration."""
        c = self.config
        return formats.Limits(c.max_file_bytes, c.max_field_bytes, c.max_record_bytes, c.max_xlsx_bytes)


def run_stage(services: Services, stage: Callable[..., None], job_id: str, *args: Any) -> None:
    """Run one stage for a running job: bad files fail the job, an unreachable customer DB is retried."""
    job = services.jobs.start(job_id) if stage is fetch else services.jobs.get(job_id)
    if job is None or job.status != "running":
        log.info("job %s: %s skipped, job is %s", job_id, stage.__name__, job.status if job else "unknown")
        return
    job_level = stage is not validate  # chunks keep their own count, several run at once
    try:
        if job_level:
            crashes = services.jobs.enter_stage(job_id, stage.__name__)
            if crashes is None:
                return
            if crashes >= MAX_CRASHES:
                raise JobFailed(f"a worker died {crashes} times while running stage {stage.__name__}; giving up")
        stage(services, job, *args)
    except JobFailed as exc:
        fail_job(services, job, str(exc))
    except CustomerDBUnavailable as exc:
        waited = services.jobs.mark_unreachable(job_id)
        if waited >= services.config.customer_db_retry_seconds:
            fail_job(services, job, f"{exc} (gave up after {waited:.0f} s)")
            return
        log.warning("job %s: %s; will retry", job_id, exc)
        raise
    finally:
        if job_level:
            services.jobs.leave_stage(job_id, stage.__name__)


def fail_job(services: Services, job: Job, error: str) -> None:
    """Mark the job failed and remove whatever it staged or published (best effort when unreachable)."""
    if services.jobs.fail(job.id, error):
        log.info("job %s failed: %s", job.id, error)
    try:
        services.customer(job.customer_id).discard(job.id, job.product_type)
    except CustomerDBUnavailable as exc:
        # No row reached the product table before publish; only an orphan staging table remains.
        log.warning("job %s: could not drop staging: %s", job.id, exc)


def _open_plan(services: Services, job: Job) -> tuple[Path, formats.FileFormat, formats.Header, dict[str, Any]]:
    """Re-resolve the job's file and check it is the file the plan was made from."""
    plan = job.plan or {}
    path = blob.resolve(job.blob_uri, job.customer_id, services.config.blob_root)
    info = blob.check_regular(path, services.config.max_file_bytes)
    if (info.st_size, info.st_mtime_ns) != (plan["size"], plan["mtime_ns"]):
        raise JobFailed("the file changed while it was being imported; enqueue it again")
    return path, formats.FileFormat(**plan["format"]), formats.Header(**plan["header"]), plan


def fetch(services: Services, job: Job) -> None:
    """Locate and check the blob, detect its format, check its header, prepare the customer DB."""
    product = services.products.get(job.product_type)
    path = blob.resolve(job.blob_uri, job.customer_id, services.config.blob_root)
    info = blob.check_regular(path, services.config.max_file_bytes)
    fmt = formats.detect_format(path, job.options)
    header = formats.read_header(path, fmt, services.limits)
    warnings: list[str] = []
    columns: list[str | None] = []
    if fmt.kind != "kv":
        column_map = product.map_header(header.names)
        columns = list(column_map.fields)
        if column_map.unknown:
            warnings.append("unknown column(s) ignored: " + ", ".join(column_map.unknown))
        if column_map.blank:
            warnings.append("column(s) with a blank header ignored: " + ", ".join(map(str, column_map.blank)))
    services.customer(job.customer_id).prepare(job.id, product.name)
    plan = {
        "format": asdict(fmt),
        "header": asdict(header),
        "columns": columns,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
    }
    services.jobs.save_plan(job.id, plan, warnings, [(PARSE, (job.id,))])


def parse(services: Services, job: Job) -> None:
    """Scan the file once, checking its structure, and cut it into chunks for validation."""
    path, fmt, header, _ = _open_plan(services, job)
    product = services.products.get(job.product_type)
    pending: list[tuple[int, int, int, int, int]] = []
    unknown_keys: set[str] = set()
    planned = 0
    cuts = formats.scan_chunks(path, fmt, header, services.limits, services.config.chunk_rows, CHUNK_BYTES)
    for cut in cuts:
        if cut.keys:
            unknown_keys.update(product.map_keys(cut.keys)[1])
        # Each batch of chunks is planned and sent at once, so validation overlaps the scan.
        pending.append((planned, cut.first_row, cut.first_line, cut.start, cut.rows))
        planned += 1
        if len(pending) >= CHUNKS_PER_TRANSACTION:
            services.jobs.add_chunks(job.id, pending, VALIDATE)
            pending = []
    services.jobs.add_chunks(job.id, pending, VALIDATE)
    if unknown_keys:
        services.jobs.log(job.id, "warning", "unknown key(s) ignored: " + ", ".join(sorted(unknown_keys)))
    services.jobs.finish_planning(job.id, planned, INSERT)


def validate(services: Services, job: Job, chunk_no: int) -> None:
    """Coerce and validate one chunk; stage its valid rows, log its invalid ones, count it once."""
    work = services.jobs.begin_chunk(job.id, chunk_no)
    if work is None:
        return
    try:
        if work.crashes >= MAX_CRASHES:
            last = work.first_row + work.row_count - 1
            raise JobFailed(f"rows {work.first_row}-{last} made a worker die {work.crashes} times; giving up")
        _validate_chunk(services, job, work)
    finally:
        services.jobs.end_chunk_attempt(job.id, chunk_no)


def _validate_chunk(services: Services, job: Job, work: ChunkWork) -> None:
    """Read, coerce and validate one chunk's records, stage the valid ones, count the chunk."""
    first, last = work.first_row, work.first_row + work.row_count - 1
    path, fmt, header, plan = _open_plan(services, job)
    product = services.products.get(job.product_type)
    records = formats.iter_records(
        path,
        fmt,
        header,
        services.limits,
        start=work.start_pos,
        first_row=first,
        first_line=work.first_line,
        max_records=work.row_count,
    )
    buffer = io.StringIO()
    valid, invalid = 0, 0
    errors: list[RowError] = []
    cap = services.config.max_logged_errors
    for source_row, data, row_errors in check_records(product, plan["columns"], records):
        if data is not None:
            buffer.write(f"{source_row}\t{copy_escape(data)}\n")
            valid += 1
        else:
            invalid += 1
            if len(errors) < cap:
                errors.extend(row_errors[: cap - len(errors)])
    if valid + invalid != work.row_count:
        raise FileRejected(f"rows {first}-{last} read back {valid + invalid} records, expected {work.row_count}")
    services.customer(job.customer_id).stage(job.id, first, last, buffer, rerun=work.attempts > 1)
    services.jobs.complete_chunk(job.id, work.chunk_no, valid, invalid, errors, cap, INSERT)


def check_records(
    product: Product, columns: list[str | None], records: Iterator[formats.Record]
) -> Iterator[tuple[int, str | None, list[RowError]]]:
    """Map each record's cells to fields, coerce and validate it: (row, JSON text or None, errors)."""
    width = len(columns)
    key_maps: dict[tuple[str, ...], dict[str, str]] = {}
    for record in records:
        row = record.source_row
        if record.error:
            yield row, None, [RowError(row, None, record.error)]
            continue
        cells = record.cells
        if isinstance(cells, dict):
            keys = tuple(cells)
            mapping = key_maps.get(keys)
            if mapping is None:
                mapping = key_maps.setdefault(keys, product.map_keys(keys)[0])
            raw = {field: cells[key] for key, field in mapping.items()}
        else:
            extra = [c for c in cells[width:] if c not in (None, "")]
            if extra:
                message = f"line {record.line}: the record has {len(cells)} cells but the header has {width} columns"
                yield row, None, [RowError(row, None, message)]
                continue
            raw = {field: cells[i] for i, field in enumerate(columns) if field is not None and i < len(cells)}
        data, row_errors = product.check_json(row, raw)
        yield row, data, row_errors


def copy_escape(text: str) -> str:
    """Escape a JSON text for COPY's text format (json.dumps already escapes control characters)."""
    return text.replace("\\", "\\\\")


def insert(services: Services, job: Job) -> None:
    """Publish the job's staged rows in one transaction and close the job."""
    store = services.customer(job.customer_id)
    if job.options.get("on_invalid") == "fail" and job.rows_invalid:
        raise JobFailed(
            f"{job.rows_invalid} of {job.rows_total} rows are invalid and on_invalid is 'fail' (see the log)"
        )
    if job.options.get("dry_run"):
        store.drop_staging(job.id)
        services.jobs.succeed(
            job.id, 0, f"dry run: {job.rows_valid} valid and {job.rows_invalid} invalid rows, nothing inserted"
        )
        return
    inserted = store.publish(job.id, job.product_type, job.rows_valid)
    services.jobs.succeed(job.id, inserted, f"imported {inserted} rows, skipped {job.rows_invalid} invalid rows")
