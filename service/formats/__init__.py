"""File formats: detect a file's format, read its header, stream its records with resume points.

Bytes in, records out: `delimited` (CSV, TSV), `kv` (key=value text), `jsonl` (JSON Lines)
and `xlsx` (with `sheet_xml`) read a blob that a source opened; `decoding` finds the text encoding, `text`
reads lines, `records` holds the types every reader yields, `limits` bounds what a file
becomes in memory. Formats import the sources (to open a blob) and the leaves, never the
schema, the databases, a stage or an edge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, cast

from service.errors import FileRejected
from service.formats import archive, compressed, delimited, jsonl, kv, spool, xlsx
from service.formats.decoding import ZIP_MAGIC, resolve_codec, sniff_encoding, validate_encoding
from service.formats.limits import Limits, clip, listed, text_error
from service.formats.records import Cut, FileFormat, Header, Record
from service.formats.spool import Spool
from service.formats.xlsx import decode_records, encode_records
from service.sources import blob
from service.sources.blob import Blob
from service.sources.ranged import temp_copy

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
    "iter_stored",
    "listed",
    "read_once",
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
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm")
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


def detect_format(path: Source, options: Mapping[str, Any], limits: Limits | None = None) -> FileFormat:
    """Decide kind, encoding, delimiter and sheet from the options, the name and the first bytes;
    and, from the bytes alone, the compression and (option member) the ZIP archive member."""
    name, compression, member, head = _peek(path, options, limits or Limits())
    suffix = posixpath.splitext(name)[1].lower()
    if options.get("encoding"):
        encoding = validate_encoding(str(options["encoding"]).strip())
    else:
        encoding = sniff_encoding(head)
    _refuse_unread(suffix, head)
    kind = _kind(
        suffix,
        options.get("format"),
        head,
        _first_line(head, encoding, skip_comments=True),
        _first_line(head, encoding, skip_comments=False),
    )
    sheet = options.get("sheet")
    header_row = options.get("header_row")
    if kind == "xlsx":
        sheet = sheet if sheet is None or isinstance(sheet, list) else str(sheet)
        return FileFormat("xlsx", "", "", sheet, header_row, compression, member)
    if header_row is not None:
        raise FileRejected(f"option header_row applies to XLSX files only; this file is read as {kind.upper()}")
    if kind == "jsonl":
        jsonl.check_encoding(encoding)
    once = bool(compression) or member is not None or blob.streamed(path)
    if once and not resolve_codec(encoding, head).splittable:
        raise FileRejected(
            f"a file in {encoding.upper()} can be imported only from a plain file that can be read at any "
            "position, not compressed, from a ZIP archive or from a server without ranges; "
            "convert it to UTF-8 or store it uncompressed"
        )
    delimiter = _delimiter(kind, options.get("delimiter"), _first_line(head, encoding, skip_comments=False))
    return FileFormat(kind, encoding, delimiter, None, None, compression, member)


def _peek(path: Source, options: Mapping[str, Any], limits: Limits) -> tuple[str, str, str | None, bytes]:
    """(the name the data goes by, its compression, the ZIP member read, its first bytes)."""
    name = path.name
    option = options.get("member")
    if option is not None and (not isinstance(option, str) or not option.strip()):
        raise FileRejected("option member must be the name of a file in the ZIP archive")
    with _open_raw(path, None) as raw:
        head = raw.read(_SNIFF_BYTES)
        compression = compressed.sniff(head)
        member = None
        if not compression and head.startswith(ZIP_MAGIC) and not _workbook_named(name, options):
            # zipfile reads the central directory at the end: a body served without ranges is
            # copied to a temp file first (within the limits, removed at once).
            copied = isinstance(raw, Spool)
            with open_checked(path, limits, whole=True) if copied else contextlib.nullcontext(raw) as zipped:
                if not archive.is_workbook(zipped):
                    name, compression, member, head = _peek_member(zipped, option, limits)
        elif compression:
            raw.seek(0)
            head = compressed.open_stream(raw, compression, _size(raw), limits, "the file").read(_SNIFF_BYTES)
        if compression:
            name = compressed.inner_name(name, compression)
            if head[257:262] == b"ustar":
                raise FileRejected("the file is a compressed tar archive; import a ZIP archive or one compressed file")
    if option is not None and member is None:
        raise FileRejected("option member applies to ZIP archives only, and this file is not one")
    return name, compression, member, head


def _peek_member(zipped: BinaryIO, option: str | None, limits: Limits) -> tuple[str, str, str, bytes]:
    """(name, compression, member, first bytes) of the ZIP archive's data file to import."""
    info = archive.choose(zipped, option)
    member = info.filename
    head = archive.open_member(zipped, info, limits).read(_SNIFF_BYTES)
    compression = compressed.sniff(head)
    if compression:
        stream = archive.open_member(zipped, info, limits)
        what = f"member {clip(member)!r}"
        head = compressed.open_stream(stream, compression, info.compress_size, limits, what).read(_SNIFF_BYTES)
    return posixpath.basename(member), compression, member, head


def _workbook_named(name: str, options: Mapping[str, Any]) -> bool:
    """A zip named a workbook, by the option format or the name, is read as one (else its content says)."""
    option = str(options.get("format") or "").strip().lower()
    return option == "xlsx" or posixpath.splitext(name)[1].lower() in WORKBOOK_SUFFIXES


def read_header(path: Source, fmt: FileFormat, limits: Limits) -> Header:
    """Read the header of the file (refusing files over the size limit)."""
    with open_data(path, fmt, limits) as fh:
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
    with open_data(path, fmt, limits) as fh:
        yield from _READERS[fmt.kind][1](fh, fmt, header, limits, start, first_row, first_line, max_records)


def iter_stored(
    payload: bytes,
    fmt: FileFormat,
    header: Header,
    limits: Limits,
    *,
    start: int,
    first_row: int,
    first_line: int,
    max_records: int,
) -> Iterator[Record]:
    """A stored chunk's records (Cut.stored of a file read once), as iter_records would read them."""
    with spool.open_window(payload) as fh:
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
    with open_data(path, fmt, limits) as fh:
        scanner = _READERS[fmt.kind][2]
        if isinstance(fh, Spool):  # read once: each Cut carries its bytes, counted as they come
            yield from _stored_cuts(
                fh, scanner(fh, fmt, header, limits, chunk_rows, min(chunk_bytes, spool.CHUNK_BYTES)), header, limits
            )
            return
        # A text file's text is its bytes; a workbook's is counted cell by cell as it is read.
        if fmt.kind != "xlsx" and fh.seek(0, os.SEEK_END) > limits.max_text_bytes:
            raise text_error("the file's text", limits)
        yield from scanner(fh, fmt, header, limits, chunk_rows, chunk_bytes)


def _stored_cuts(fh: Spool, cuts: Iterator[Cut], header: Header, limits: Limits) -> Iterator[Cut]:
    """The Cuts of a file read once, each with its own bytes (Cut.stored): from the newline
    before its start (a reader checks it resumes at a line) to the next Cut's start."""
    head = fh.head[:4]  # what a reader reads first: the BOM
    fh.keep(max(header.data_start - 1, 0))
    previous: Cut | None = None
    for cut in cuts:
        if previous is not None:
            yield _with_bytes(fh, head, previous, cut.start, limits)
            fh.keep(cut.start - 1)
        previous = cut
    if previous is not None:
        yield _with_bytes(fh, head, previous, None, limits)


def _with_bytes(fh: Spool, head: bytes, cut: Cut, end: int | None, limits: Limits) -> Cut:
    begin = max(cut.start - 1, 0)
    data = fh.between(begin, end)
    if begin + len(data) > limits.max_text_bytes:
        raise text_error("the file's text", limits)
    return dataclasses.replace(cut, stored=spool.encode(head, begin, data))


def splittable(fmt: FileFormat) -> bool:
    """Tell whether a Record.end can be handed to another process as a resume point."""
    if fmt.kind == "xlsx":
        return True
    return resolve_codec(fmt.encoding, b"").splittable


def read_once(path: Source, fmt: FileFormat) -> bool:
    """Tell whether the file is read once, front to back, its chunks storing their bytes (see
    spool.py): compressed, a ZIP member, or a blob served without ranges; a workbook never is
    (its chunks store their cells)."""
    return fmt.kind != "xlsx" and (bool(fmt.compression) or fmt.member is not None or blob.streamed(path))


def open_data(path: Source, fmt: FileFormat, limits: Limits) -> BinaryIO:
    """Open a blob's data as the readers read it: the file itself; a file read once seen through
    a Spool (decompressed, its ZIP member, or its body as served); a workbook as a seekable file
    (a temp copy when it comes compressed or in a ZIP archive)."""
    if not fmt.compression and fmt.member is None and not blob.streamed(path):
        return open_checked(path, limits, whole=fmt.kind == "xlsx")
    raw = _open_raw(path, limits, whole=fmt.member is not None and blob.streamed(path))
    try:
        stream, size, what = raw, _size(raw), "the file"
        if fmt.member is not None:
            info = archive.choose(raw, fmt.member)
            stream, size, what = (
                archive.open_member(raw, info, limits),
                info.compress_size,
                f"member {clip(fmt.member)!r}",
            )
        if fmt.compression:
            stream = compressed.open_stream(stream, fmt.compression, size, limits, what)
        if fmt.kind == "xlsx":  # a workbook is read at any position: a temp copy
            copy = temp_copy(stream, "import-xlsx-")  # closes stream
            raw.close()
            return copy
        if isinstance(stream, Spool):
            return cast(BinaryIO, stream)
        # A ZIP member's reader leaves the archive's file open: the Spool closes both.
        return cast(BinaryIO, Spool(stream, owner=raw if fmt.member is not None else None))
    except BaseException:
        raw.close()
        raise


def open_checked(path: Blob, limits: Limits | None, *, whole: bool = False) -> BinaryIO:
    """Open a blob for binary reading within limits.max_file_bytes (see service.sources.blob.open_blob)."""
    return blob.open_blob(path, None if limits is None else limits.max_file_bytes, whole=whole)


def _open_raw(path: Source, limits: Limits | None, *, whole: bool = False) -> BinaryIO:
    """The blob's bytes as stored; a blob served without ranges seen through a Spool (it can
    seek back to its top)."""
    raw = open_checked(path, limits, whole=whole)
    return cast(BinaryIO, Spool(raw)) if blob.streamed(path) and not whole else raw


def _size(raw: BinaryIO) -> int:
    """The size of a seekable file (0: unknown, a file read once)."""
    if isinstance(raw, Spool) or not raw.seekable():
        return 0
    here = raw.tell()
    size = raw.seek(0, os.SEEK_END)
    raw.seek(here)
    return size


def _refuse_unread(suffix: str, head: bytes) -> None:
    """Refuse, by name, a spreadsheet format this service does not read."""
    what = REFUSED.get(suffix)
    if what is None and head.startswith(OLE2_MAGIC):
        what = "an old binary Office file (such as .xls)"
    if what is not None:
        raise FileRejected(f"the file is {what}, which cannot be read; save it as .xlsx or CSV and import that")


def _kind(suffix: str, option: Any, head: bytes, first: str, very_first: str) -> str:
    """Take the kind from the option, else the extension, else the content (first: the first
    non-blank line that is not a # comment; very_first: the first non-blank line)."""
    if option:
        kind = str(option).strip().lower()
        if kind not in KINDS:
            raise FileRejected(f"option format: {option!r} is not one of {', '.join(KINDS)}")
        return kind
    by_extension = EXTENSIONS.get(suffix)
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
