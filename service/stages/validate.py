"""The validate stage, one chunk at a time: read its records (from the file, the stored cells
of a spreadsheet, or a replay's stored rejects), coerce and validate each, COPY the valid
ones and store the invalid ones with their cells as read, and count the chunk exactly once.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator
from typing import Any

from service import formats
from service.errors import FileRejected, RowError
from service.schema.codegen import Plan
from service.schema.products import Product
from service.schema.records import encode_json
from service.stages import replay
from service.stages.cleanup import discard_rows
from service.stages.fetch import open_plan
from service.stages.services import INSERT, Services
from service.storage.jobs import ChunkWork, Job
from service.storage.store import CustomerStore


def validate(services: Services, job: Job, work: ChunkWork) -> bool:
    """Read, coerce and validate one chunk's records, COPY the valid ones and store the invalid
    ones, count the chunk exactly once; True once it is counted (see run_chunk).

    A streaming append job COPYs into the product table, an atomic one into its staging table."""
    product = services.products.get(job.product_type)
    if job.replay_of:
        plan = job.plan or {}
        first, last = work.first_row, replay.last_row(work)
        records = replay.records(services, job, work)
    else:
        first, last = work.first_row, work.first_row + work.row_count - 1
        path, fmt, header, plan = open_plan(services, job)
        records = _chunk_records(services, job, work, path, fmt, header, plan)
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


def _chunk_records(
    services: Services,
    job: Job,
    work: ChunkWork,
    path: Any,
    fmt: formats.FileFormat,
    header: formats.Header,
    plan: dict[str, Any],
) -> Iterator[formats.Record]:
    """A chunk's records: from the file, or from what the job's fetch stored for the chunk (a
    spreadsheet's cells; the bytes of a file read once)."""
    stored = fmt.kind == "xlsx" or plan.get("stored")
    payload = services.customer(job.customer_id).chunk_cells(job.id, work.chunk_no) if stored else None
    if payload is not None and fmt.kind == "xlsx":
        return formats.decode_records(payload)
    if payload is not None:
        return formats.iter_stored(
            payload,
            fmt,
            header,
            services.limits,
            start=work.start_pos,
            first_row=work.first_row,
            first_line=work.first_line,
            max_records=work.row_count,
        )
    if plan.get("stored"):
        raise FileRejected(f"the stored bytes of rows {work.first_row}-{work.first_row + work.row_count - 1} are gone")
    # A spreadsheet planned by an earlier version has no stored cells and reads the sheet.
    return formats.iter_records(
        path,
        fmt,
        header,
        services.limits,
        start=work.start_pos,
        first_row=work.first_row,
        first_line=work.first_line,
        max_records=work.row_count,
    )


def check_records(
    product: Product, columns: list[str | None], records: Iterator[formats.Record]
) -> Iterator[tuple[formats.Record, str | None, list[RowError]]]:
    """Map each record's cells to fields, coerce and validate it: (record, JSON text or None, errors).

    A record of keyed cells (kv, JSON Lines) maps its keys like header names; its values are
    JSON values (a kv value is always a string), coerced by Product.check_values_json."""
    width = len(columns)
    # Per order of a record's keys: its key -> field map (None when every key is its field's
    # name) and the generated functions for the fields it fills, looked up once per order.
    key_maps: dict[tuple[str, ...], tuple[dict[str, str] | None, Plan | None]] = {}
    for record in records:
        row = record.source_row
        if record.error:
            yield record, None, [RowError(row, None, record.error)]
            continue
        cells = record.cells
        if isinstance(cells, dict):
            keys = tuple(cells)
            try:
                mapping, plan = key_maps[keys]
            except KeyError:
                mapping = _key_map(product, keys)
                plan = product.json_plan(keys if mapping is None else tuple(mapping.values()))
                key_maps[keys] = mapping, plan
            raw = cells if mapping is None else {field: cells[key] for key, field in mapping.items()}
            if plan is not None:
                text = plan.json(*raw.values())
                if text is not None:
                    yield record, text, []
                    continue
            data, row_errors = product.check_values_json(row, raw)
            yield record, data, row_errors
            continue
        extra = [c for c in cells[width:] if c not in (None, "")]
        if extra:
            message = f"line {record.line}: the record has {len(cells)} cells but the header has {width} columns"
            yield record, None, [RowError(row, None, message)]
            continue
        raw = {field: cells[i] for i, field in enumerate(columns) if field is not None and i < len(cells)}
        data, row_errors = product.check_json(row, raw)
        yield record, data, row_errors


def _key_map(product: Product, keys: tuple[str, ...]) -> dict[str, str] | None:
    """The fields a record's keys fill, or None when each key is its field's own name (the cells
    are then the record as they are)."""
    mapping = product.map_keys(keys)[0]
    return None if len(mapping) == len(keys) and all(key == field for key, field in mapping.items()) else mapping


def reject_line(job_id: str, record: formats.Record, errors: list[RowError]) -> bytes:
    """One COPY line of an invalid row: job, row, its cells as read and its errors.

    A row's cells are kept as text; a keyed record's values as they are (a JSON Lines
    object's are JSON values; a kv record's, text)."""
    cells = record.cells
    kept: list[str] | dict[str, Any] = (
        cells if isinstance(cells, dict) else [value if value.__class__ is str else cell_text(value) for value in cells]
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
