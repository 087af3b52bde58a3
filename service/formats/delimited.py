"""CSV and TSV: RFC 4180 records parsed line by line, with positions to resume from."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from typing import BinaryIO

from service.errors import FileRejected, LimitExceeded
from service.formats.text import FileFormat, Header, Limits, LineReader, Record, limit_text, open_lines

SNIFFED = (";", "|", "\t")  # candidates when a CSV header has no comma, in order of preference


def sniff_delimiter(line: str) -> str:
    """Pick the delimiter of a CSV header line: ',' unless it has none and another is frequent."""
    counts = dict.fromkeys((",", *SNIFFED), 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    if counts[","]:
        return ","
    best = max(SNIFFED, key=lambda d: counts[d])  # max keeps the first of equals
    return best if counts[best] else ","


def read_header(fh: BinaryIO, fmt: FileFormat, limits: Limits) -> Header:
    """Read the first non-blank record as the header names."""
    lines = open_lines(fh, fmt.encoding, limits)
    for record in _records(lines, fmt, limits, 1):
        names = [name.strip() for name in record.cells]
        return Header(names=names, data_start=record.end, data_line=record.next_line)
    raise FileRejected("the file is empty: it has no header line")


def iter_records(
    fh: BinaryIO,
    fmt: FileFormat,
    header: Header,
    limits: Limits,
    start: int | None,
    first_row: int,
    first_line: int | None,
    max_records: int | None,
) -> Iterator[Record]:
    """Yield the data records from start (default: just after the header)."""
    lines = open_lines(fh, fmt.encoding, limits, header=header, start=start, line=first_line)
    if max_records is None:
        yield from _records(lines, fmt, limits, first_row)
        return
    last_row = first_row + max_records - 1
    for record in _records(lines, fmt, limits, first_row) if max_records > 0 else ():
        yield record
        if record.source_row >= last_row:
            return  # without reading on: the next record belongs to whoever resumes here


def _records(lines: LineReader, fmt: FileFormat, limits: Limits, row: int) -> Iterator[Record]:
    """Parse records with the csv module, skipping blank ones and enforcing the limits."""
    _allow_fields_up_to(limits.max_record_bytes)
    # strict=False: a stray quote inside an unquoted field is kept as text, as Excel does.
    rows = csv.reader(iter(lines), delimiter=fmt.delimiter, quotechar='"', doublequote=True, strict=False)
    max_field, encoding = limits.max_field_bytes, lines.codec.name
    try:
        for cells in rows:
            if lines.exhausted:
                # Non-strict csv.reader returns the partial record instead of failing at end of file.
                raise FileRejected(
                    "a quoted field is never closed: the file ends inside it (check for a stray '\"')",
                    line=lines.record_line,
                )
            if lines.size - lines.record_size > max_field:
                _check_fields(cells, encoding, max_field, lines.record_line)
            if (cells and cells[0].strip()) or any(cell.strip() for cell in cells):
                yield Record(row, lines.record_line, lines.pos, cells, next_line=lines.next_line)
                row += 1
            lines.mark()
    except csv.Error as exc:
        raise FileRejected(f"the record is not valid CSV ({exc})", line=lines.record_line) from None


def _check_fields(cells: list[str], encoding: str, max_field_bytes: int, line: int) -> None:
    """Refuse a record with a field over the limit, measured in the file's own bytes."""
    for cell in cells:
        if len(cell) > max_field_bytes // 4 and len(cell.encode(encoding)) > max_field_bytes:
            raise LimitExceeded(limit_text("a field", "max_field_bytes", max_field_bytes), line=line)


def _allow_fields_up_to(size: int) -> None:
    """Raise the csv module's own field limit so that ours, checked per field, is the one that bites."""
    # The csv limit is process-wide and counts characters; only ever raising it keeps
    # concurrent readers with different Limits safe. Records are bounded anyway.
    if csv.field_size_limit() <= size:
        csv.field_size_limit(min(size + 1, sys.maxsize))
