"""CSV and TSV: RFC 4180 records parsed line by line, with byte offsets to resume from."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from service.errors import FileRejected, LimitExceeded
from service.formats.text import FileFormat, Header, Limits, LineReader, Record, limit_text, open_lines

SNIFFED = (";", "|", "\t")  # candidates when a CSV header has no comma, in order of preference


class _Parsed(NamedTuple):
    cells: list[str]
    line: int  # first line of the record
    end: int  # position after its last line
    next_line: int


class _Feed:
    """Hands csv.reader one line at a time and bounds the size of the record it builds."""

    def __init__(self, lines: LineReader, max_record_bytes: int) -> None:
        self.lines = lines
        self.exhausted = False
        self._max = max_record_bytes
        self.mark()

    def mark(self) -> None:
        """Note that the next line read starts a new record."""
        self.record_size = self.lines.size
        self.record_line = self.lines.next_line

    def __iter__(self) -> Iterator[str]:
        for text in self.lines:
            # A quoted newline makes a record of many lines; the limit applies to all of them.
            if self.lines.size - self.record_size > self._max:
                what = limit_text("a record", "max_record_bytes", self._max)
                raise LimitExceeded(what, line=self.record_line)
            yield text
        self.exhausted = True


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
    for parsed in _parse(lines, fmt, limits):
        names = [name.strip() for name in parsed.cells]
        return Header(names=names, data_start=parsed.end, data_line=parsed.next_line)
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
    if max_records is not None and max_records <= 0:
        return
    for row, parsed in enumerate(_parse(lines, fmt, limits), first_row):
        yield Record(row, parsed.line, parsed.end, parsed.cells, next_line=parsed.next_line)
        if max_records is not None and row - first_row + 1 >= max_records:
            return


def _parse(lines: LineReader, fmt: FileFormat, limits: Limits) -> Iterator[_Parsed]:
    """Parse records with the csv module, skipping blank ones and enforcing the limits."""
    _allow_fields_up_to(limits.max_record_bytes)
    feed = _Feed(lines, limits.max_record_bytes)
    # strict=False: a stray quote inside an unquoted field is kept as text, as Excel does.
    rows = csv.reader(iter(feed), delimiter=fmt.delimiter, quotechar='"', doublequote=True, strict=False)
    while True:
        try:
            cells = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FileRejected(f"the record is not valid CSV ({exc})", line=feed.record_line) from None
        if feed.exhausted:
            # Non-strict csv.reader returns the partial record instead of failing at end of file.
            raise FileRejected(
                "a quoted field is never closed: the file ends inside it (check for a stray '\"')",
                line=feed.record_line,
            )
        parsed = _Parsed(cells, feed.record_line, lines.pos, lines.next_line)
        size = lines.size - feed.record_size
        feed.mark()
        if size > limits.max_field_bytes:
            _check_fields(cells, lines.codec.name, limits.max_field_bytes, parsed.line)
        if any(cell.strip() for cell in cells):
            yield parsed


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
