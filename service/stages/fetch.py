"""The first stage: fetch locates and checks the blob, detects its format, maps its header,
prepares the customer's tables, then scans the file once and cuts it into chunks (the plan
and the first chunks commit together). `open_plan` re-opens a planned file for a chunk.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from service import formats
from service.errors import JobCancelled, JobFailed
from service.schema.products import Product
from service.sources import blob
from service.stages.services import CHUNK_BYTES, CHUNKS_PER_TRANSACTION, INSERT, Services
from service.storage import rejects
from service.storage.jobs import Job
from service.storage.store import CustomerStore

log = logging.getLogger(__name__)


def open_plan(
    services: Services, job: Job, layout: dict[str, Any] | None = None
) -> tuple[blob.Blob, formats.FileFormat, formats.Header, dict[str, Any]]:
    """Re-resolve the job's file and check it is the file the plan (default: the job's) was made from.

    A file is known by its size and mtime (a stat per chunk). An S3 object is pinned to the
    plan's size and ETag without a HEAD: every GET names that ETag (If-Match), so a replaced or
    vanished object fails the read that meets it."""
    plan = layout or job.plan or {}
    found = blob.locate(job.blob_uri, job.customer_id, services.config)
    pinned = blob.pin(found, plan)
    if pinned is None:
        pinned, size, version = blob.check(found, services.config.max_file_bytes)
        if size != plan["size"] or any(plan.get(name) != value for name, value in version.items()):
            raise JobFailed(blob.CHANGED)
    return pinned, formats.FileFormat(**plan["format"]), formats.Header(**plan["header"]), plan


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
    _check_listed_version(job, size, version)
    fmt = formats.detect_format(found, job.options, services.limits)
    header = formats.read_header(found, fmt, services.limits)
    columns, warnings, notes = map_columns(product, header.names) if fmt.kind not in formats.KEYED else ([], [], [])
    prepare_tables(services, job, product)
    # version: mtime_ns (a file) or etag (an S3 object); _open_plan checks it again. stored: the
    # file is read once (compressed, a ZIP member...), its chunks read the bytes the scan stores.
    plan = {"format": asdict(fmt), "header": asdict(header), "columns": columns, "size": size, **version}
    if formats.read_once(found, fmt):
        plan["stored"] = True
    lines = [("warning", text) for text in warnings] + [("info", text) for text in notes]
    _plan_chunks(services, job, plan, lines)  # parse at once: one message less per job


def _check_listed_version(job: Job, size: int, version: dict[str, Any]) -> None:
    """Fail a feed's job whose file is no longer the version the feed listed (SPEC 20: a file
    that changes is a new version, imported by the feed's next run as a new file)."""
    expected = (job.options.get("feed") or {}).get("version")
    now = {"size": size, **version}
    if expected and any(now.get(name) != value for name, value in expected.items()):
        raise JobFailed(
            "the file changed after the feed listed it; the feed's next run imports the new version as a new file"
        )


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
    path, fmt, header, _ = open_plan(services, job, plan)
    product = services.products.get(job.product_type)
    pending: list[tuple[int, int, int, int, int]] = []
    keys: set[str] = set()  # every key of a key=value file
    planned = 0
    store = services.customer(job.customer_id)
    cuts = formats.scan_chunks(path, fmt, header, services.limits, services.config.chunk_rows, CHUNK_BYTES)
    for cut in cuts:
        if cut.records is not None:  # a spreadsheet: its chunks read their cells from here
            store.save_chunk_cells(job.id, planned, formats.encode_records(cut.records))
        elif cut.stored is not None:  # a file read once: its chunks read their bytes from here
            store.save_chunk_cells(job.id, planned, cut.stored)
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
