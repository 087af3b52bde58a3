"""The four stages of an import, as plain functions: fetch, parse, validate, insert.

Each stage loads its job by id, does one step, and names the next stage; the JobStore
writes that message in the same transaction as the state it follows from. Every stage
is safe to run twice.
"""

from __future__ import annotations

import datetime
import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from service import formats, logs
from service.config import Config
from service.errors import (
    CustomerDBRefused,
    CustomerDBUnavailable,
    FileRejected,
    JobCancelled,
    JobFailed,
    RowError,
)
from service.schema.products import Product, ProductRegistry, encode_json
from service.sources import blob
from service.sources.s3 import CHANGED, S3Object
from service.stages import insert as closing
from service.stages.insert import insert as insert  # (the last stage, in its own module)
from service.stages.insert import publish as publish
from service.stages.insert import summarize
from service.storage import rejects
from service.storage.db import customer_dsn
from service.storage.jobs import ChunkWork, Job, JobStore
from service.storage.store import CustomerStore

log = logging.getLogger(__name__)

FETCH, PARSE, VALIDATE, INSERT = "import_fetch", "import_parse", "import_validate", "import_insert"
UNDO = "import_undo"  # a big undo, finished by a worker (service.control)
DISCARD = "import_discard"  # deletes what a cancelled job left
REPLAY = "import_replay"  # the first stage of a replay job, instead of fetch and parse
# A chunk's time limit (its actor's) bounds how long after a failure it may still commit
# rows; the final cleanup of a failed job waits that long.
CHUNK_TIME_LIMIT_SECONDS = 300
CLEANUP_AFTER_SECONDS = CHUNK_TIME_LIMIT_SECONDS + 60
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
        return formats.Limits(
            max_file_bytes=c.max_file_bytes,
            max_field_bytes=c.max_field_bytes,
            max_record_bytes=c.max_record_bytes,
            max_xlsx_bytes=c.max_xlsx_bytes,
            max_columns=c.max_columns,
            max_text_bytes=c.max_text_bytes,
        )


def run_stage(services: Services, stage: Callable[..., None], job_id: str) -> None:
    """Run one job-level stage: bad files fail the job, an unreachable customer DB is retried.

    One transaction loads the job and marks the stage running (the first stage also starts
    the job). The transaction that ends the stage clears the mark (planning done, succeed,
    fail, waiting for a turn); only a stage that stops otherwise needs a leave_stage of its own.
    """
    entered = services.jobs.enter_stage(job_id, stage.__name__, start=stage in (fetch, replay))
    if entered is None:
        log.info("job %s: %s skipped, the job is not running", job_id, stage.__name__)
        return
    job, crashes = entered
    ended = False
    try:
        with _stage_outcome(services, job, stage.__name__):
            if crashes >= MAX_CRASHES:
                raise JobFailed(f"a worker died {crashes} times while running stage {stage.__name__}; giving up")
            stage(services, job)
        ended = True  # done, failed or cancelled; not when it raised to be retried
    finally:
        if not ended:
            services.jobs.leave_stage(job_id, stage.__name__)


def run_chunk(services: Services, job_id: str, chunk_no: int) -> None:
    """Run the validate stage of one chunk (see validate), with the errors handled as run_stage does."""
    begun = services.jobs.begin_chunk(job_id, chunk_no)
    if begun is None:
        return  # done already, or the job is not running
    job, work = begun
    completed = False
    try:
        with _stage_outcome(services, job, f"validate[{chunk_no}]"):
            if work.crashes >= MAX_CRASHES:
                last = work.first_row + work.row_count - 1
                raise JobFailed(f"rows {work.first_row}-{last} made a worker die {work.crashes} times; giving up")
            completed = validate(services, job, work)
    finally:
        if not completed:  # complete_chunk ends the attempt itself
            services.jobs.end_chunk_attempt(job_id, chunk_no)


@contextmanager
def _stage_outcome(services: Services, job: Job, name: str) -> Iterator[None]:
    """What a stage's errors do: a bad file fails the job, a cancel stops quietly, an
    unreachable customer DB is retried (re-raised) until customer_db_retry_seconds."""
    started = time.perf_counter()
    with logs.job_context(job.id, job.customer_id, name):
        try:
            yield
            log.info("job %s: %s done in %.3f s", job.id, name, time.perf_counter() - started)
        except JobCancelled:
            log.info("job %s: %s stopped, the job was cancelled", job.id, name)
        except JobFailed as exc:
            fail_job(services, job, str(exc))
        except CustomerDBUnavailable as exc:
            waited = services.jobs.mark_unreachable(job.id)
            if waited >= services.config.customer_db_retry_seconds:
                if fail_job(services, job, f"{exc} (gave up after {waited:.0f} s)"):
                    return
                # Its COMMIT's outcome is unknown: retried with backoff, then by the sweep.
            log.warning("job %s: %s; will retry", job.id, exc)
            raise


def fail_job(services: Services, job: Job, error: str) -> bool:
    """Mark the job failed and delete what it left; the sweep deletes once more later. False
    when the job may not fail yet (it stays running).

    An atomic job whose publish committed (its journal says so) succeeded after all: it is
    finished as such, never failed with its rows in the table. One that claimed its commit
    (`publishing`) while its journal cannot be read may have committed: it stays running until
    the journal says (see closing.wait_for_journal). A streaming job's rows are deleted before
    and after it is marked failed, so nobody sees a `failed` job with rows; a chunk committing
    later sees the job failed and deletes its own (see `sweep_cleanups` for one that dies in between).
    """
    if job.atomic:
        job = services.jobs.get(job.id) or job  # (a stage's copy predates its claim of the commit)
        recorded = _finish_published(services, job)
        if recorded:
            return True
        if recorded is None and job.publishing and job.status == "running":
            if closing.wait_for_journal(services, job):
                return False
            error = closing.unknown_outcome(services)
    reachable = discard_rows(services, job)
    if services.jobs.fail(job.id, error):
        log.info("job %s failed: %s", job.id, error)
    if reachable:
        discard_rows(services, job)
    return True


def _finish_published(services: Services, job: Job) -> bool | None:
    """Succeed an atomic job whose publish committed before the app DB heard of it: True;
    False when it did not commit, None when the journal cannot be read."""
    try:
        publication = services.customer(job.customer_id).journal(job.id)
    except (CustomerDBUnavailable, CustomerDBRefused) as exc:
        log.warning("job %s: cannot check whether its publish committed: %s", job.id, exc)
        return None
    if publication is None:
        return False
    services.jobs.succeed(job.id, publication.counts, summarize(job, publication.counts))
    return True


def discard_rows(services: Services, job: Job) -> bool:
    """Delete what a failed or cancelled job left; False when the database is unreachable."""
    try:
        deleted = services.customer(job.customer_id).discard(job.id, job.product_type, job.atomic)
    except CustomerDBUnavailable as exc:
        log.warning("job %s: rows not deleted yet, the sweep will retry: %s", job.id, exc)
        return False
    except CustomerDBRefused as exc:
        # A table the service did not create (no job_id column): it cannot hold rows of ours.
        log.warning("job %s: %s", job.id, exc)
        return True
    if deleted:
        log.info("job %s: deleted %d rows of the %s job", job.id, deleted, job.status)
    return True


def discard_cancelled(services: Services, job_id: str) -> None:
    """Delete what a cancelled job left (a worker does it, so a cancel request never waits on it);
    a running job whose cancel was requested reads `cancelled` only once its rows are gone."""
    job = services.jobs.get(job_id)
    if job is None or not (job.status == "cancelled" or job.cancel_requested):
        return
    if not discard_rows(services, job) and job.cancel_requested:
        raise CustomerDBUnavailable(f"job {job.id}: its rows cannot be deleted yet; retrying")
    services.jobs.finish_cancel(job.id)


def sweep_cleanups(services: Services) -> None:
    """Delete failed or cancelled jobs' leftovers once more, after any chunk in flight then has ended."""
    for job in services.jobs.cleanups_due(CLEANUP_AFTER_SECONDS):
        if discard_rows(services, job):
            services.jobs.cleanup_done(job.id)


def purge_history(services: Services) -> None:
    """Delete undo history past `undo_retention_days` in every customer database."""
    for customer_id in services.config.customers:
        try:
            services.customer(customer_id).purge_history(services.config.undo_retention_days)
        except (CustomerDBUnavailable, CustomerDBRefused) as exc:
            log.warning("customer %s: undo history not purged this time: %s", customer_id, exc)


def _open_plan(
    services: Services, job: Job, layout: dict[str, Any] | None = None
) -> tuple[blob.Blob, formats.FileFormat, formats.Header, dict[str, Any]]:
    """Re-resolve the job's file and check it is the file the plan (default: the job's) was made from.

    A file is known by its size and mtime (a stat per chunk). An S3 object is pinned to the
    plan's size and ETag without a HEAD: every GET names that ETag (If-Match), so a replaced or
    vanished object fails the read that meets it."""
    plan = layout or job.plan or {}
    found = blob.locate(job.blob_uri, job.customer_id, services.config)
    if isinstance(found, S3Object) and "etag" in plan:
        found = found.pinned(plan["size"], plan["etag"])
    else:
        found, size, version = blob.check(found, services.config.max_file_bytes)
        if size != plan["size"] or any(plan.get(name) != value for name, value in version.items()):
            raise JobFailed(CHANGED)
    return found, formats.FileFormat(**plan["format"]), formats.Header(**plan["header"]), plan


def fetch(services: Services, job: Job) -> None:
    """Locate and check the blob, detect its format, check its header, prepare the customer DB."""
    if job.chunks_total is not None:
        # Planned already: the message came again because its worker died after the planning
        # committed but before the ack. Reading the file again could only fail the job (an
        # XLSX's chunks read their stored cells, the file may be gone).
        log.info("job %s: fetch skipped, the file is planned already", job.id)
        services.jobs.leave_stage(job.id, "fetch")
        return
    product = services.products.get(job.product_type)
    found = blob.locate(job.blob_uri, job.customer_id, services.config)
    found, size, version = blob.check(found, services.config.max_file_bytes)
    fmt = formats.detect_format(found, job.options)
    header = formats.read_header(found, fmt, services.limits)
    columns, warnings, notes = map_columns(product, header.names) if fmt.kind != "kv" else ([], [], [])
    prepare_tables(services, job, product)
    # version: mtime_ns (a file) or etag (an S3 object); _open_plan checks it again.
    plan = {"format": asdict(fmt), "header": asdict(header), "columns": columns, "size": size, **version}
    lines = [("warning", text) for text in warnings] + [("info", text) for text in notes]
    _plan_chunks(services, job, plan, lines)  # parse at once: one message less per job


def map_columns(product: Product, names: list[str]) -> tuple[list[str | None], list[str], list[str]]:
    """Map a header to fields: (field per column, warnings, info notes) for the job's log."""
    column_map = product.map_header(names)
    warnings = []
    # A rejects.csv coming back, fixed: its `errors` column is ours, not the customer's.
    unknown = [name for name in column_map.unknown if name.strip().casefold() != rejects.ERRORS_COLUMN]
    # A header may have thousands of columns and long names: the lines name the first few.
    if unknown:
        warnings.append("unknown column(s) ignored: " + formats.listed(unknown))
    if column_map.blank:
        warnings.append("column(s) with a blank header ignored: " + formats.listed(map(str, column_map.blank)))
    notes = [f"column {formats.clip(name)!r} read as field {field} (an alias)" for name, field in column_map.aliases]
    return list(column_map.fields), warnings, notes


def prepare_tables(services: Services, job: Job, product: Product) -> None:
    """Create what the job writes to: the product table, its key index (keyed modes), a staging table."""
    keyed = job.mode != "append"
    stage_for = job.id if job.atomic and not job.options.get("dry_run") else None
    services.customer(job.customer_id).prepare(product.name, product.key if keyed else None, stage_for)


def parse(services: Services, job: Job) -> None:
    """The parse stage of a job fetched by an earlier version (fetch now parses at once)."""
    _plan_chunks(services, job, None, [])


def _plan_chunks(services: Services, job: Job, plan: dict[str, Any] | None, lines: list[tuple[str, str]]) -> None:
    """Scan the file once, checking its structure, and cut it into chunks for validation.

    The first transaction saves the plan (when given) with the first chunks; a small file's
    whole planning, log lines included, is that one transaction."""
    path, fmt, header, _ = _open_plan(services, job, plan)
    product = services.products.get(job.product_type)
    pending: list[tuple[int, int, int, int, int]] = []
    keys: set[str] = set()  # every key of a key=value file
    planned = 0
    store = services.customer(job.customer_id)
    cuts = formats.scan_chunks(path, fmt, header, services.limits, services.config.chunk_rows, CHUNK_BYTES)
    for cut in cuts:
        if cut.records is not None:  # a spreadsheet: its chunks read their cells from here
            store.save_chunk_cells(job.id, planned, formats.encode_records(cut.records))
        lines += [("info", note) for note in cut.notes]
        if cut.keys and not keys.issuperset(cut.keys):
            keys.update(cut.keys)
            product.map_keys(keys)  # two keys of the file for one field (e.g. email, mail) reject it
        # Each batch of chunks is planned and sent at once, so validation overlaps the scan.
        pending.append((planned, cut.first_row, cut.first_line, cut.start, cut.rows))
        planned += 1
        if len(pending) >= CHUNKS_PER_TRANSACTION:
            if not services.jobs.add_chunks(job.id, pending, plan=plan, lines=lines):
                _stopped(store, job)
            pending, plan, lines = [], None, []
    unknown_keys = product.map_keys(keys)[1]
    if unknown_keys:
        lines.append(("warning", "unknown key(s) ignored: " + formats.listed(sorted(unknown_keys))))
    aliases = product.aliases_used(keys)
    lines += [("info", f"key {formats.clip(key)!r} read as field {field} (an alias)") for key, field in aliases]
    if not services.jobs.add_chunks(job.id, pending, plan=plan, lines=lines, total=planned, final_stage=INSERT):
        _stopped(store, job)


def _stopped(store: CustomerStore, job: Job) -> None:
    """The job was cancelled or failed while its file was scanned: the chunk cells stored since
    its discard ran go now (not at the sweep, minutes later), and the scan stops."""
    store.drop_chunk_cells(job.id)
    raise JobCancelled(f"job {job.id} is no longer running")


def replay(services: Services, job: Job) -> None:
    """Plan a replay job's chunks from the stored rejects of the job it replays (service.replay)."""
    from service.stages import replay as replays

    replays.plan(services, job)


def validate(services: Services, job: Job, work: ChunkWork) -> bool:
    """Read, coerce and validate one chunk's records, COPY the valid ones and store the invalid
    ones, count the chunk exactly once; True once it is counted (see run_chunk).

    A streaming append job COPYs into the product table, an atomic one into its staging table."""
    product = services.products.get(job.product_type)
    if job.replay_of:
        from service.stages import replay

        plan = job.plan or {}
        first, last = work.first_row, replay.last_row(work)
        records = replay.records(services, job, work)
    else:
        first, last = work.first_row, work.first_row + work.row_count - 1
        path, fmt, header, plan = _open_plan(services, job)
        # A spreadsheet's chunk reads the cells its job's fetch stored (planned by an earlier
        # version, it has none and reads the sheet).
        stored = services.customer(job.customer_id).chunk_cells(job.id, work.chunk_no) if fmt.kind == "xlsx" else None
        records = (
            formats.decode_records(stored)
            if stored is not None
            else formats.iter_records(
                path,
                fmt,
                header,
                services.limits,
                start=work.start_pos,
                first_row=first,
                first_line=work.first_line,
                max_records=work.row_count,
            )
        )
    # UTF-8 bytes, not a StringIO: one non-ASCII character makes a str buffer 4 bytes per
    # character, and a chunk's buffer is most of what a chunk in flight holds.
    buffer = io.BytesIO()
    staged = job.atomic
    prefix = CustomerStore.copy_prefix(job.id, staged)
    dry_run = bool(job.options.get("dry_run"))
    rejected = io.BytesIO()  # every invalid row, with its cells as read (SPEC 14)
    valid, invalid = 0, 0
    errors: list[RowError] = []
    cap = services.config.max_logged_errors
    for record, data, row_errors in check_records(product, plan["columns"], records):
        if data is not None:
            if not dry_run:
                buffer.write(f"{prefix}{record.source_row}\t{copy_escape(data)}\n".encode())
            valid += 1
        else:
            invalid += 1
            rejected.write(reject_line(job.id, record, row_errors))
            if len(errors) < cap:
                errors.extend(row_errors[: cap - len(errors)])
    if valid + invalid != work.row_count:
        raise FileRejected(f"rows {first}-{last} read back {valid + invalid} records, expected {work.row_count}")
    if invalid or not dry_run:
        services.customer(job.customer_id).copy_chunk(
            job.id,
            job.product_type,
            first,
            last,
            None if dry_run else buffer,
            staged=staged,
            rerun=work.attempts > 1,
            rejects=rejected if invalid else None,
        )
    if not services.jobs.complete_chunk(job.id, work.chunk_no, valid, invalid, errors, cap, INSERT):
        # The job failed while this chunk ran: its rows must not outlive the failure.
        discard_rows(services, job)
    return True


def check_records(
    product: Product, columns: list[str | None], records: Iterator[formats.Record]
) -> Iterator[tuple[formats.Record, str | None, list[RowError]]]:
    """Map each record's cells to fields, coerce and validate it: (record, JSON text or None, errors)."""
    width = len(columns)
    key_maps: dict[tuple[str, ...], dict[str, str]] = {}
    for record in records:
        row = record.source_row
        if record.error:
            yield record, None, [RowError(row, None, record.error)]
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
                yield record, None, [RowError(row, None, message)]
                continue
            raw = {field: cells[i] for i, field in enumerate(columns) if field is not None and i < len(cells)}
        data, row_errors = product.check_json(row, raw)
        yield record, data, row_errors


def reject_line(job_id: str, record: formats.Record, errors: list[RowError]) -> bytes:
    """One COPY line of an invalid row: job, row, its cells as read (as text) and its errors."""
    cells = record.cells
    kept: list[str] | dict[str, str] = (
        {key: value if value.__class__ is str else cell_text(value) for key, value in cells.items()}
        if isinstance(cells, dict)
        else [value if value.__class__ is str else cell_text(value) for value in cells]
    )
    problems = [{"field": e.field, "message": e.message} for e in errors]
    fields = (encode_json(kept), encode_json(problems))
    return f"{job_id}\t{record.source_row}\t{copy_escape(fields[0])}\t{copy_escape(fields[1])}\n".encode()


def cell_text(value: Any) -> str:
    """A cell as text, as a customer would type it again: empty for nothing, ISO 8601 for a date."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a spreadsheet shows 3, not 3.0
    return str(value)


def copy_escape(text: str) -> str:
    """Escape a JSON text for COPY's text format (json.dumps already escapes control characters)."""
    return text.replace("\\", "\\\\")
