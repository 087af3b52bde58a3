"""The values every reader shares, text or workbook: how a file is read (FileFormat), its header,
its records with the positions to resume after them, and the chunks a scan cuts them into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FileFormat:
    """How a file is to be read."""

    kind: str  # 'csv' | 'tsv' | 'kv' | 'jsonl' | 'xlsx'
    encoding: str  # python codec for text; '' for xlsx
    delimiter: str  # csv/tsv only, else ''
    sheet: str | list[str] | None  # xlsx only: a sheet's name, or several names read as one file
    header_row: int | None = None  # xlsx only: the header's sheet row (None: the first non-empty row)
    compression: str = ""  # '' | 'gzip' | 'bzip2' | 'xz' | 'zstd': the blob's (or its ZIP member's) compression
    member: str | None = None  # the ZIP archive member read, when the blob is a ZIP archive


@dataclass(frozen=True)
class Header:
    """The header of a file and where its data begins."""

    names: list[str]
    data_start: int  # text: byte offset; xlsx: sheet row number
    data_line: int  # file line (xlsx: sheet row) of the first data record


@dataclass(slots=True)
class Record:
    """One data record with the positions needed to resume after it.

    Not frozen: a frozen dataclass costs a microsecond per record to build (object.__setattr__).
    Readers never change a record once yielded; neither should its consumers.
    """

    source_row: int  # 1 = first data record of the file
    line: int  # file line (xlsx: sheet row) where the record starts
    end: int  # position just after this record: a resume point
    cells: list[Any] | dict[str, str]
    error: str | None = None  # a problem confined to this record
    next_line: int = 0  # line (xlsx: row) where the following record would start


@dataclass(frozen=True)
class Cut:
    """One chunk of a file found by scan_chunks: read it back with
    iter_records(start=start, first_row=first_row, first_line=first_line, max_records=rows)."""

    first_row: int  # source_row of the chunk's first record
    first_line: int  # line (xlsx: sheet row) where the chunk's reading starts
    start: int  # resume position where the chunk's reading starts (the previous chunk's last Record.end)
    rows: int  # number of records in the chunk (blank and comment lines do not count)
    keys: frozenset[str] = (
        frozenset()
    )  # kv only: every key of the chunk's records (bad lines: the pairs before the fault)
    # xlsx only: the chunk's records themselves, to be stored for the chunk (a sheet cannot be
    # entered in the middle, so scan_chunks' one pass is the only read of it)
    records: list[Record] | None = None
    notes: tuple[str, ...] = ()  # lines for the job's log (xlsx: which rows each sheet gave)
    # a file read once (compressed, a ZIP member, https without ranges): the chunk's own bytes,
    # to be stored for the chunk and read back with iter_stored (see spool.py)
    stored: bytes | None = None
