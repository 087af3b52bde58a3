"""File formats: detect a file's format, read its header, stream its records with resume points.

Bytes in, records out: `delimited` (CSV, TSV), `kv` (key=value text), `jsonl` (JSON Lines)
and `xlsx` (with `sheet_xml`) read a blob that a source opened; `decoding` finds the text encoding, `text`
reads lines, `records` holds the types every reader yields, `limits` bounds what a file
becomes in memory. Formats import the sources (to open a blob) and the leaves, never the
schema, the databases, a stage or an edge.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from service.errors import FileRejected
from service.formats import delimited, jsonl, kv, xlsx
from service.formats.decoding import ZIP_MAGIC, resolve_codec, sniff_encoding, validate_encoding
from service.formats.limits import Limits, clip, listed, text_error
from service.formats.records import Cut, FileFormat, Header, Record
from service.formats.xlsx import decode_records, encode_records
from service.sources import blob
from service.sources.blob import Blob

# A blob of any store: the readers open it with open_checked.
Source = Blob

__all__ = [
    "Cut",
    "FileFormat",
    "Header",
    "KEYED",
    "Limits",
    "Record",
    "clip",
    "decode_records",
    "detect_format",
    "encode_records",
    "iter_records",
    "listed",
    "read_header",
    "scan_chunks",
    "splittable",
]

KINDS = ("csv", "tsv", "kv", "xlsx", "jsonl")
# The kinds whose records are objects (their keys are the columns), not rows under a header.
KEYED = ("kv", "jsonl")
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".kv": "kv",
    ".txt": "kv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
# Spreadsheets of formats not read: refused by name, whatever the options say.
REFUSED = {
    ".xls": "an old binary Excel workbook (.xls)",
    ".xlsb": "a binary Excel workbook (.xlsb)",
    ".ods": "an OpenDocument spreadsheet (.ods)",
    ".numbers": "an Apple Numbers document (.numbers)",
}
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .xls (and other old Office files)
_SNIFF_BYTES = 64 * 1024

_HeaderReader = Callable[[BinaryIO, FileFormat, Limits], Header]
_RecordReader = Callable[
    [BinaryIO, FileFormat, Header, Limits, int | None, int, int | None, int | None], Iterator[Record]
]
_Scanner = Callable[[BinaryIO, FileFormat, Header, Limits, int, int], Iterator[Cut]]
_READERS: dict[str, tuple[_HeaderReader, _RecordReader, _Scanner]] = {
    "csv": (delimited.read_header, delimited.iter_records, delimited.scan),
    "tsv": (delimited.read_header, delimited.iter_records, delimited.scan),
    "kv": (kv.read_header, kv.iter_records, kv.scan),
    "jsonl": (jsonl.read_header, jsonl.iter_records, jsonl.scan),
    "xlsx": (xlsx.read_header, xlsx.iter_records, xlsx.scan),
}


def detect_format(path: Source, options: Mapping[str, Any]) -> FileFormat:
    """Decide kind, encoding, delimiter and sheet from the options, the extension and the first bytes."""
    with open_checked(path, None) as fh:
        head = fh.read(_SNIFF_BYTES)
    if options.get("encoding"):
        encoding = validate_encoding(str(options["encoding"]).strip())
    else:
        encoding = sniff_encoding(head)
    _refuse_unread(path, head)
    kind = _kind(
        path,
        options.get("format"),
        head,
        _first_line(head, encoding, skip_comments=True),
        _first_line(head, encoding, skip_comments=False),
    )
    sheet = options.get("sheet")
    header_row = options.get("header_row")
    if kind == "xlsx":
        return FileFormat("xlsx", "", "", sheet if sheet is None or isinstance(sheet, list) else str(sheet), header_row)
    if header_row is not None:
        raise FileRejected(f"option header_row applies to XLSX files only; this file is read as {kind.upper()}")
    if kind == "jsonl":
        jsonl.check_encoding(encoding)
    delimiter = _delimiter(kind, options.get("delimiter"), _first_line(head, encoding, skip_comments=False))
    return FileFormat(kind, encoding, delimiter, None)


def read_header(path: Source, fmt: FileFormat, limits: Limits) -> Header:
    """Read the header of the file (refusing files over the size limit)."""
    with open_checked(path, limits, whole=fmt.kind == "xlsx") as fh:
        return _READERS[fmt.kind][0](fh, fmt, limits)


def iter_records(
    path: Source,
    fmt: FileFormat,
    header: Header,
    limits: Limits,
    *,
    start: int | None = None,
    first_row: int = 1,
    first_line: int | None = None,
    max_records: int | None = None,
) -> Iterator[Record]:
    """Stream the data records from start (default: the first one), at most max_records of them."""
    with open_checked(path, limits, whole=fmt.kind == "xlsx") as fh:
        yield from _READERS[fmt.kind][1](fh, fmt, header, limits, start, first_row, first_line, max_records)


def scan_chunks(
    path: Source, fmt: FileFormat, header: Header, limits: Limits, chunk_rows: int, chunk_bytes: int
) -> Iterator[Cut]:
    """Cut the data records into chunks in one pass, with every check iter_records makes.

    A chunk ends after chunk_rows records, or after the first record that brings the
    chunk's bytes to chunk_bytes: a text file's counted from the chunk's start position to
    the end of that record, a workbook's as the text its cells stand for (a shared string
    at each use); only the last chunk may be shorter. Blank records and kv comments
    count for nothing, as in iter_records. A file whose positions are not byte offsets
    (UTF-16, UTF-32... see splittable) gives one Cut with all its records; a file without
    records gives none. Each Cut reads back with
    iter_records(start=cut.start, first_row=cut.first_row, first_line=cut.first_line,
    max_records=cut.rows) as exactly cut.rows records, and the chunks, read one after
    the other, give exactly the records of one full iter_records pass. A problem that
    fails the file (FileRejected, LimitExceeded) is raised as iter_records raises it, same
    message and line, after the Cuts before it; a bad kv or jsonl line is a record, not an error.
    A text file whose size passes max_text_bytes is refused before the first Cut (by the
    scan only); a workbook's text is counted row by row, by iter_records too.

    For kv, Cut.keys holds every key of the chunk's records (a bad line: the pairs before
    the fault); for jsonl every key of the chunk's objects (a bad line: none); for the other
    formats it is empty.
    """
    if chunk_rows < 1 or chunk_bytes < 1:
        raise ValueError(f"chunk_rows and chunk_bytes must be positive, not {chunk_rows} and {chunk_bytes}")
    with open_checked(path, limits, whole=fmt.kind == "xlsx") as fh:
        # A text file's text is its bytes; a workbook's is counted cell by cell as it is read.
        if fmt.kind != "xlsx" and fh.seek(0, os.SEEK_END) > limits.max_text_bytes:
            raise text_error("the file's text", limits)
        yield from _READERS[fmt.kind][2](fh, fmt, header, limits, chunk_rows, chunk_bytes)


def splittable(fmt: FileFormat) -> bool:
    """Tell whether a Record.end can be handed to another process as a resume point."""
    if fmt.kind == "xlsx":
        return True
    return resolve_codec(fmt.encoding, b"").splittable


def open_checked(path: Blob, limits: Limits | None, *, whole: bool = False) -> BinaryIO:
    """Open a blob for binary reading within limits.max_file_bytes (see service.sources.blob.open_blob)."""
    return blob.open_blob(path, None if limits is None else limits.max_file_bytes, whole=whole)


def _refuse_unread(path: Source, head: bytes) -> None:
    """Refuse, by name, a spreadsheet format this service does not read."""
    what = REFUSED.get(path.suffix.lower())
    if what is None and head.startswith(OLE2_MAGIC):
        what = "an old binary Office file (such as .xls)"
    if what is not None:
        raise FileRejected(f"the file is {what}, which cannot be read; save it as .xlsx or CSV and import that")


def _kind(path: Source, option: Any, head: bytes, first: str, very_first: str) -> str:
    """Take the kind from the option, else the extension, else the content (first: the first
    non-blank line that is not a # comment; very_first: the first non-blank line)."""
    if option:
        kind = str(option).strip().lower()
        if kind not in KINDS:
            raise FileRejected(f"option format: {option!r} is not one of {', '.join(KINDS)}")
        return kind
    by_extension = EXTENSIONS.get(path.suffix.lower())
    if by_extension:
        return by_extension
    if head.startswith(ZIP_MAGIC):
        return "xlsx"
    # A JSON object starts with '{' and holds a quoted key: never a key=value line, nor a CSV
    # header (a quote inside an unquoted CSV field is no way to name a column).
    if jsonl.looks_like_jsonl(very_first):
        return "jsonl"
    if kv.looks_like_kv(first):
        return "kv"
    return "tsv" if "\t" in first and "," not in first else "csv"


def _delimiter(kind: str, option: Any, first: str) -> str:
    """Take the delimiter from the option, else TAB for TSV, else sniff it from a CSV header."""
    if kind in KEYED:
        return ""
    if option is not None and option != "":
        delimiter = str(option)
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise FileRejected(f"option delimiter: {delimiter!r} must be one character other than a quote or a newline")
        return delimiter
    return "\t" if kind == "tsv" else delimited.sniff_delimiter(first)


def _first_line(head: bytes, encoding: str, *, skip_comments: bool) -> str:
    """Return the first non-blank line (optionally not a # comment), decoded for sniffing only."""
    codec = resolve_codec(encoding, head)
    # Errors are replaced here only: the real read is strict and names the bad line.
    text = head[codec.bom_len :].decode(codec.name, "replace")
    for line in text.splitlines():
        if line.strip() and not (skip_comments and line.lstrip().startswith("#")):
            return line
    return ""
