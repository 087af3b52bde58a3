"""CSV and TSV: RFC 4180 records parsed line by line, with positions to resume from."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from service.errors import FileRejected, LimitExceeded
from service.formats.limits import Limits, columns_error, limit_text
from service.formats.records import Cut, FileFormat, Header, Record
from service.formats.text import LineSource, byte_horizon, open_source

if TYPE_CHECKING:
    from _csv import Reader

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
    source = open_source(fh, fmt.encoding, limits)
    for record in _records(source, fmt, limits, 1, None):
        if len(record.cells) > limits.max_columns:
            raise columns_error(len(record.cells), limits, record.line)  # before copying its names
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
    """The data records from start (default: just after the header), at most max_records of them."""
    source = open_source(fh, fmt.encoding, limits, header=header, start=start, line=first_line)
    # Returned, not yielded from: one generator less between the csv loop and the consumer.
    return _records(source, fmt, limits, first_row, max_records) if max_records is None or max_records > 0 else iter(())


def scan(
    fh: BinaryIO, fmt: FileFormat, header: Header, limits: Limits, chunk_rows: int, chunk_bytes: int
) -> Iterator[Cut]:
    """Cut the data records into chunks, with every check iter_records makes, building no Record."""
    source = open_source(fh, fmt.encoding, limits, header=header)
    rows = _reader(source, fmt, limits)
    max_field, encoding = limits.max_field_bytes, source.codec.name
    first_row, first_line, start = 1, header.data_line, header.data_start  # of the chunk being counted
    line0 = record_line = header.data_line
    line0 -= 1  # rows.line_num counts the lines read since then
    count = 0
    if source.codec.splittable:
        horizon = 0  # a record ending on this line or later may bring the chunk to chunk_bytes
    else:
        chunk_rows = horizon = sys.maxsize  # positions count characters: one chunk
    try:
        for cells in rows:
            last = line0 + rows.line_num
            if source.careful:
                _check_record(source, cells, record_line, last, max_field, encoding)
            record_line = source.mark = last + 1
            if (cells and cells[0].strip()) or any(cell.strip() for cell in cells):
                count += 1
                if count >= chunk_rows or (
                    last >= horizon and (horizon := byte_horizon(source, start + chunk_bytes)) <= last
                ):
                    yield Cut(first_row, first_line, start, count)
                    first_row, first_line, start = first_row + count, last + 1, source.ends[last - source.base]
                    count = horizon = 0
    except csv.Error as exc:
        raise FileRejected(f"the record is not valid CSV ({exc})", line=record_line) from None
    if count:
        yield Cut(first_row, first_line, start, count)


def _reader(source: LineSource, fmt: FileFormat, limits: Limits) -> Reader:
    _allow_fields_up_to(limits.max_record_bytes)
    # strict=False: a stray quote inside an unquoted field is kept as text, as Excel does.
    return csv.reader(source.lines(), delimiter=fmt.delimiter, quotechar='"', doublequote=True, strict=False)


def _records(
    source: LineSource, fmt: FileFormat, limits: Limits, row: int, max_records: int | None
) -> Iterator[Record]:
    """Parse records with the csv module, skipping blank ones and enforcing the limits."""
    rows = _reader(source, fmt, limits)
    max_field, encoding = limits.max_field_bytes, source.codec.name
    last_row = -1 if max_records is None else row + max_records - 1
    line0 = record_line = source.mark  # the first line
    line0 -= 1  # rows.line_num counts the lines read since then
    try:
        for cells in rows:
            last = line0 + rows.line_num  # the record's last line
            if source.careful:
                _check_record(source, cells, record_line, last, max_field, encoding)
            if (cells and cells[0].strip()) or any(cell.strip() for cell in cells):
                yield Record(row, record_line, source.ends[last - source.base], cells, None, last + 1)
                if row == last_row:
                    return  # without reading on: the next record belongs to whoever resumes here
                row += 1
            record_line = source.mark = last + 1
    except csv.Error as exc:
        raise FileRejected(f"the record is not valid CSV ({exc})", line=record_line) from None


def _check_record(source: LineSource, cells: list[str], first: int, last: int, max_field: int, encoding: str) -> None:
    """The checks a record needs when its block was not checked whole: end of file, field sizes."""
    if source.exhausted:
        # Non-strict csv.reader returns the partial record instead of failing at end of file.
        raise FileRejected(
            "a quoted field is never closed: the file ends inside it (check for a stray '\"')",
            line=first,
        )
    if source.record_bytes(first, last) > max_field:
        _check_fields(cells, encoding, max_field, first)


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
