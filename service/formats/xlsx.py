"""XLSX workbooks: openpyxl opens the workbook (read-only), sheet_xml streams the sheet's rows;
positions are sheet rows."""

from __future__ import annotations

import datetime
import json
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from openpyxl.reader.excel import SHARED_STRINGS, ExcelReader
from openpyxl.styles.stylesheet import apply_stylesheet

from service.errors import FileRejected, LimitExceeded
from service.formats import sheet_xml
from service.formats.limits import Limits, TextMeter, clip, columns_error, human_size, listed
from service.formats.records import Cut, FileFormat, Header, Record

# What a cell costs a chunk's records beside its text (its slot, its Python object): a
# chunk's byte budget counts it, so that a chunk of many small cells stays small too.
_CELL_BYTES = 48
_PIECE_BYTES = 1024 * 1024  # of a stored chunk's text decompressed at a time


def read_header(fh: BinaryIO, fmt: FileFormat, limits: Limits) -> Header:
    """Read the header names: row header_row of the sheet, else its first non-empty row. With
    several sheets named, the first one's header, after checking each other one has the same
    columns (in any order)."""
    with _open_sheets(fh, fmt, limits) as sheets:
        header = _header(sheets[0], fmt.header_row)
        for sheet in sheets[1:]:
            _columns_in(sheet, _header(sheet, fmt.header_row), sheets[0], header)
        return header


def _header(sheet: _Sheet, wanted: int | None) -> Header:
    """The sheet's header: row `wanted`, else its first non-empty row."""
    for number, values in _rows(sheet, wanted or 1):
        if wanted is not None and (number != wanted or _blank(values)):
            raise FileRejected(
                f"option header_row: row {wanted} of the sheet {sheet.title!r} is empty; the header must be there",
                line=wanted,
            )
        if not _blank(values):
            names = ["" if value is None else str(value).strip() for value in values]
            while names and not names[-1]:
                names.pop()  # formatted but empty cells past the last column
            if len(names) > sheet.meter.limits.max_columns:
                raise columns_error(len(names), sheet.meter.limits, number)
            return Header(names=names, data_start=number + 1, data_line=number + 1)
    if wanted is not None:
        raise FileRejected(
            f"option header_row: the sheet {sheet.title!r} has no row {wanted}; the header must be there",
            line=wanted,
        )
    raise FileRejected(f"the sheet {sheet.title!r} is empty: it has no header row")


def _columns_in(sheet: _Sheet, header: Header, first: _Sheet, first_header: Header) -> list[int | None]:
    """Where each column of the first sheet's header is in this sheet's (None: a blank name);
    refuse a sheet whose named columns are not the first sheet's."""

    def key(name: str) -> str:
        return name.strip().casefold()

    here: dict[str, int] = {}
    for index, name in enumerate(header.names):
        if name and here.setdefault(key(name), index) != index:
            raise FileRejected(
                f"the sheet {sheet.title!r} has the column {clip(name)!r} twice", line=header.data_line - 1
            )
    wanted = [key(name) for name in first_header.names if name]
    missing = [name for name in first_header.names if name and key(name) not in here]
    extra = [name for name in header.names if name and key(name) not in wanted]
    if missing or extra:
        said = "; ".join(
            part
            for part in (
                f"it lacks {listed(missing, quoted=True)}" if missing else "",
                f"it adds {listed(extra, quoted=True)}" if extra else "",
            )
            if part
        )
        raise FileRejected(
            f"option sheet: the sheets of one job must have the same columns, and the sheet {sheet.title!r} "
            f"does not have those of {first.title!r} ({said})",
            line=header.data_line - 1,
        )
    return [here[key(name)] if name else None for name in first_header.names]


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
    """Yield the non-empty rows from sheet row start (default: the row after the header). With
    several sheets, start does not apply: the records from source_row first_row on."""
    del first_line  # records carry their real sheet row numbers
    if max_records is not None and max_records <= 0:
        return
    with _open_sheets(fh, fmt, limits) as sheets:
        records: Iterator[Record]
        if len(sheets) > 1:
            records = (r for r in _records(sheets, fmt, header) if r.source_row >= first_row)
        else:
            records = _records(sheets, fmt, header, header.data_start if start is None else max(start, 1), first_row)
        for count, record in enumerate(records, 1):
            yield record
            if max_records is not None and count >= max_records:
                return


def scan(
    fh: BinaryIO, fmt: FileFormat, header: Header, limits: Limits, chunk_rows: int, chunk_bytes: int
) -> Iterator[Cut]:
    """Cut the non-empty rows into chunks of chunk_rows, each Cut with its records (the one
    read of the sheet; see encode_records); positions are sheet rows. A chunk also ends at the
    record that brings it to chunk_bytes: the text its cells stand for, and _CELL_BYTES a cell.

    With several sheets, a chunk may hold rows of two of them, and the notes of the Cuts say
    which rows of the job each sheet gave (a full chunk is held until the next record, so that
    the last sheet's note has a Cut to go with)."""
    with _open_sheets(fh, fmt, limits) as sheets:
        meter = sheets[0].meter
        first_line, start = header.data_line, header.data_start
        records: list[Record] = []
        size = 0
        notes: list[str] = []
        held: Cut | None = None
        for record in _records(sheets, fmt, header, notes=notes if len(sheets) > 1 else None):
            if held is not None:
                yield replace(held, notes=tuple(notes))
                held = None
                notes.clear()
            records.append(record)
            size += meter.row + _CELL_BYTES * len(record.cells)
            if len(records) >= chunk_rows or size >= chunk_bytes:
                cut = Cut(records[0].source_row, first_line, start, len(records), records=records)
                if len(sheets) > 1:
                    held = cut
                else:
                    yield cut
                # Record.next_line and Record.end of the chunk's last record
                first_line, start, records, size = record.next_line, record.end, [], 0
        if held is not None:
            yield replace(held, notes=() if records else tuple(notes))
        if records:
            yield Cut(records[0].source_row, first_line, start, len(records), records=records, notes=tuple(notes))


def _records(
    sheets: list[_Sheet],
    fmt: FileFormat,
    header: Header,
    start: int | None = None,
    first_row: int = 1,
    notes: list[str] | None = None,
) -> Iterator[Record]:
    """The non-empty rows of the sheets, one after the other, numbered from first_row; the first
    sheet's from row start (default: after its header), each other one's after its own header,
    with its cells put in the first sheet's column order. A sheet's end adds a line to notes."""
    width = len(header.names)
    source_row = first_row
    for index, sheet in enumerate(sheets):
        order: list[int | None] | None = None  # the first sheet's columns are the header's
        if index == 0:
            begin, own_width = header.data_start if start is None else start, width
        else:
            own = _header(sheet, fmt.header_row)
            begin, own_width, order = own.data_start, len(own.names), _columns_in(sheet, own, sheets[0], header)
        first, rows = source_row, (0, 0)
        for number, values in _rows(sheet, begin):
            if _blank(values):
                continue
            cells = _fit(values, width) if order is None else _reorder(values, order, own_width)
            yield Record(source_row, number, number + 1, cells, next_line=number + 1)
            rows = (rows[0] or number, number)
            source_row += 1
        if notes is not None:
            said = f"rows {first:,}-{source_row - 1:,} of the job (its rows {rows[0]:,}-{rows[1]:,})"
            notes.append(f"sheet {sheet.title!r}: " + (said if source_row > first else "no rows"))


def _reorder(values: tuple[Any, ...], order: list[int | None], own_width: int) -> list[Any]:
    """A row of a later sheet in the first sheet's column order; its cells past its own
    header's width stay at the end (the record is refused for them, as in the first sheet)."""
    cells = [values[i] if i is not None and i < len(values) else None for i in order]
    extra = list(values[own_width:])
    while extra and extra[-1] is None:
        extra.pop()
    return cells + extra


def encode_records(records: list[Record]) -> bytes:
    """A chunk's records as compressed JSON lines, [source_row, sheet row, cells] each, dates tagged.

    Compressed a line at a time: JSON escapes a control character in six, so the text of a
    whole chunk may be several times its budget; one line is bounded by the record limit."""
    encode = json.JSONEncoder(default=_tag, ensure_ascii=False).encode
    packer = zlib.compressobj(1)
    parts = []
    for index, record in enumerate(records):
        line = encode([record.source_row, record.line, record.cells])
        parts.append(packer.compress((f"\n{line}" if index else line).encode()))
    parts.append(packer.flush())
    return b"".join(parts)


def decode_records(payload: bytes) -> Iterator[Record]:
    """The records encode_records stored, as iter_records would read them from the sheet, one
    at a time (a chunk in flight holds its compressed text and a piece of its text, not all
    its rows as objects)."""
    decode = json.JSONDecoder(object_hook=_untag).decode
    unpacker = zlib.decompressobj()
    held: list[bytes] = []  # the start of a line that goes on in the next piece
    while payload:
        piece = unpacker.decompress(payload, _PIECE_BYTES)
        payload = unpacker.unconsumed_tail
        if b"\n" not in piece:
            held.append(piece)
            continue
        lines = piece.split(b"\n")
        lines[0] = b"".join([*held, lines[0]])
        held = [lines.pop()]
        for line in lines:
            yield _record(decode(line.decode()))
    last = b"".join([*held, unpacker.flush()])
    if last:
        yield _record(decode(last.decode()))


def _record(stored: list[Any]) -> Record:
    source_row, number, cells = stored
    return Record(source_row, number, number + 1, cells, next_line=number + 1)


_TEMPORAL: dict[str, Any] = {
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "timedelta": lambda text: datetime.timedelta(microseconds=int(text)),
}


def _tag(value: Any) -> dict[str, str]:
    """JSON for a date, time or duration cell: {"$": its type, "v": its ISO text}."""
    if isinstance(value, datetime.timedelta):
        return {"$": "timedelta", "v": str(value // datetime.timedelta(microseconds=1))}
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return {"$": type(value).__name__, "v": value.isoformat()}
    raise TypeError(f"a cell of type {type(value).__name__} cannot be stored")


def _untag(obj: dict[str, Any]) -> Any:
    return _TEMPORAL[obj["$"]](obj["v"])


def _fit(values: tuple[Any, ...], width: int) -> list[Any]:
    """Pad a row to the header's width and drop empty cells past it (they are only formatting)."""
    cells = list(values)
    if len(cells) < width:
        cells.extend([None] * (width - len(cells)))
    while len(cells) > width and cells[-1] is None:
        cells.pop()
    return cells


def _blank(values: tuple[Any, ...]) -> bool:
    return all(value is None or (isinstance(value, str) and not value.strip()) for value in values)


@dataclass
class _Sheet:
    """One worksheet of an open workbook: its name and what reading its rows needs."""

    title: str
    path: str  # its XML part in the package
    archive: zipfile.ZipFile
    book: Any  # openpyxl's Workbook, as far as ExcelReader filled it (strings, styles, epoch)
    shared: sheet_xml.SharedStrings
    meter: TextMeter  # one for all the sheets of a pass: the file's text

    def rows(self) -> Iterator[tuple[int, tuple[Any, ...]]]:
        book = self.book
        with self.archive.open(self.path) as source:
            yield from sheet_xml.iter_rows(
                source, self.shared, book.epoch, book._date_formats, book._timedelta_formats, self.meter
            )


@contextmanager
def _open_sheets(fh: BinaryIO, fmt: FileFormat, limits: Limits) -> Iterator[list[_Sheet]]:
    """Check the package, open the workbook and yield the chosen worksheets: the first one, or
    the one the option sheet names, or each one of the list it names, in its order.

    openpyxl's ExcelReader reads the workbook's parts but not its worksheets: opening a
    read-only worksheet reads its XML to the end when it has no <dimension> (as files
    written by openpyxl have not), which costs as much as reading its rows."""
    _check_package(fh, limits)
    try:
        reader = ExcelReader(fh, read_only=True, data_only=True, keep_links=False)
        reader.read_manifest()
        shared = _shared_strings(reader, limits)
        reader.read_workbook()
        apply_stylesheet(reader.archive, reader.wb)
        sheets = [
            (sheet.name, rel.target)
            for sheet, rel in reader.parser.find_sheets()
            if rel.target in reader.valid_files and "chartsheet" not in rel.Type
        ]
    except FileRejected:
        reader.archive.close()
        raise
    except Exception as exc:  # openpyxl raises KeyError, ValueError, XML errors... on damaged files
        raise FileRejected(f"not a valid XLSX file: the workbook cannot be opened ({_say(exc)})") from exc
    try:
        picked = _pick_sheets(sheets, fmt.sheet)
        meter = TextMeter(limits, "the workbook's text (a shared string counts at each cell that uses it)")
        # A title only names the sheet in messages and notes: clipped, as a workbook may hold any.
        yield [_Sheet(clip(title), path, reader.archive, reader.wb, shared, meter) for title, path in picked]
    finally:
        reader.archive.close()


def _shared_strings(reader: ExcelReader, limits: Limits) -> sheet_xml.SharedStrings:
    """The workbook's shared strings, read by sheet_xml (openpyxl's list of str takes three
    times the memory); none when it has no table."""
    part = reader.package.find(SHARED_STRINGS)
    if part is None:
        return sheet_xml.SharedStrings()
    with reader.archive.open(part.PartName[1:]) as source:
        return sheet_xml.read_shared_strings(source, limits)


def _check_package(fh: BinaryIO, limits: Limits) -> None:
    """Refuse what is not a zip, and a package whose uncompressed content passes the limit."""
    try:
        with zipfile.ZipFile(fh) as package:
            members = package.infolist()
            total = sum(member.file_size for member in members)
            names = {member.filename for member in members}
            mimetype = package.read("mimetype")[:100] if "mimetype" in names else b""
    except Exception as exc:  # BadZipFile, EOFError, NotImplementedError (odd versions), ValueError...
        raise FileRejected(f"not a valid XLSX file: it is not a zip package ({_say(exc)})") from exc
    if what := _other_package(names, mimetype):
        raise FileRejected(f"the file is {what}, which cannot be read; save it as .xlsx or CSV and import that")
    # zipfile never inflates a member past its declared size, so the declared sizes bound memory.
    if total > limits.max_xlsx_bytes:
        raise LimitExceeded(
            f"the workbook's uncompressed content is {total:,} bytes, more than the "
            f"max_xlsx_bytes limit ({human_size(limits.max_xlsx_bytes)})"
        )
    fh.seek(0)


def _other_package(names: set[str], mimetype: bytes) -> str | None:
    """Name a zip package that is a spreadsheet of another format, else None."""
    if mimetype.startswith(b"application/vnd.oasis.opendocument.spreadsheet"):
        return "an OpenDocument spreadsheet (.ods)"
    if "xl/workbook.bin" in names:
        return "a binary Excel workbook (.xlsb)"
    return None


def _pick_sheets(sheets: list[tuple[str, str]], names: str | list[str] | None) -> list[tuple[str, str]]:
    """The (title, part) of each worksheet named, in the order named; by default the first one."""
    if names is None:
        if not sheets:
            raise FileRejected("the workbook has no worksheet")
        return sheets[:1]
    parts = dict(sheets)
    wanted = [names] if isinstance(names, str) else names
    missing = [name for name in wanted if name not in parts]
    if missing:
        titles = listed((title for title, _ in sheets), quoted=True) or "none"
        which = f"no sheet {clip(missing[0])!r}" if len(missing) == 1 else f"no sheets {listed(missing, quoted=True)}"
        raise FileRejected(f"option sheet: the workbook has {which}; its sheets are {titles}")
    return [(name, parts[name]) for name in wanted]


def _rows(sheet: _Sheet, start: int) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """Yield (sheet row number, values) of the rows from row start that the sheet's XML holds
    (rows it leaves out are empty), turning a damaged sheet into FileRejected."""
    number = start
    try:
        for number, values in sheet.rows():
            if number >= start:
                yield number, values
    except FileRejected:
        raise
    except sheet_xml.SheetDamaged as exc:  # expat errors, a bad shared-string index or number...
        raise FileRejected(f"the sheet {sheet.title!r} is damaged and cannot be read ({exc})", line=exc.row) from exc
    except Exception as exc:  # anything else the workbook's parts throw
        raise FileRejected(
            f"the sheet {sheet.title!r} is damaged and cannot be read ({_say(exc)})", line=number
        ) from exc


def _say(exc: Exception) -> str:
    # clipped: a library's message may quote a part of the file at any length
    return clip(f"{type(exc).__name__}: {exc}", 200) if str(exc) else type(exc).__name__
