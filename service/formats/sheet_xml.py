"""A worksheet's rows read straight from its XML with expat, about 15x openpyxl's read-only pass,
and the workbook's shared strings kept compact.

openpyxl still opens the workbook (sheet list, date styles, epoch); the shared strings and
the sheet's rows go through these parsers. It gives the values openpyxl's read-only,
data-only `iter_rows(values_only=True)` gives, row for row (a property test holds it to
that): numbers as int or float, date-styled numbers as dates, booleans, shared and inline
strings (rich text runs joined, phonetic runs left out), cached formula results, error
codes as text; a row's values run to its last cell (in document order), gaps are None. Rows missing from the
XML are not produced (they are empty), nor rows whose number goes backwards.

Given a TextMeter, the reader also holds the sheet to the file limits as it goes: a cell
counts the text it stands for (a shared string its length, at every use, looked up
without decoding it), so a field, a row and the whole text are refused before they are
built; a shared string over 1 KiB is decoded only when its row is handed over.
"""

from __future__ import annotations

import datetime
import sys
from array import array
from collections.abc import Iterator
from typing import IO, Any, Protocol
from xml.parsers import expat

from openpyxl.utils.cell import column_index_from_string
from openpyxl.utils.datetime import from_excel, from_ISO8601

from service.errors import LimitExceeded
from service.formats.limits import Limits, TextMeter, clip, field_error, human_size, record_error

_BLOCK = 256 * 1024  # bytes of XML handed to expat at a time (a module variable: tests make it tiny)
# A shared string longer than this is decoded only when its row is handed over, after the
# row's text is counted: a block of sheet XML then holds at most this much text per cell.
_LAZY_BYTES = 1024
_EXCEL_COLUMNS = 16_384  # XFD: no cell of a worksheet Excel writes is past it


class Strings(Protocol):
    """The shared strings a sheet's cells point into, by index (a list, or SharedStrings)."""

    def __getitem__(self, index: int, /) -> str: ...


class SharedStrings:
    """A workbook's shared strings as one UTF-8 buffer and their offsets: about 8 bytes per
    string beside its text. A list of str costs some 60 bytes more per string, and a 1M-row
    sheet saved by Excel has a couple of million of them (openpyxl's table: 100 MB, 12.5 s
    for 2M strings; this one: a third of that memory, a fifth of the time)."""

    def __init__(self) -> None:
        self._text = bytearray()
        self._ends = array("Q")
        self._over: dict[int, int] = {}  # index -> size, of the strings too long to keep

    def append(self, text: str) -> None:
        self._text += text.encode("utf-8", "surrogatepass")
        self._ends.append(len(self._text))

    def append_over(self, size: int) -> None:
        """Note a string too long to keep: its size only (a cell that uses it is refused)."""
        self._over[len(self._ends)] = size
        self._ends.append(len(self._text))

    def __len__(self) -> int:
        return len(self._ends)

    @property
    def nbytes(self) -> int:
        """What the table takes in memory."""
        return len(self._text) + self._ends.itemsize * len(self._ends)

    def fetch(self, index: int, most: int) -> tuple[int, str | None]:
        """The string's length in UTF-8 bytes and, when it is at most `most`, its text."""
        if index < 0:
            raise IndexError(f"shared string {index} does not exist")
        ends = self._ends
        end = ends[index]  # IndexError past the table
        start = ends[index - 1] if index else 0
        if self._over and index in self._over:
            return self._over[index], None
        if end - start > most:
            return end - start, None
        return end - start, self._text[start:end].decode("utf-8", "surrogatepass")

    def __getitem__(self, index: int) -> str:
        if index < 0:
            raise IndexError(f"shared string {index} does not exist")
        if self._over and index in self._over:
            raise ValueError(f"shared string {index} is too long to be read")
        end = self._ends[index]  # IndexError past the table
        start = self._ends[index - 1] if index else 0
        return self._text[start:end].decode("utf-8", "surrogatepass")


def read_shared_strings(source: IO[bytes], limits: Limits | None = None) -> SharedStrings:
    """The shared-string table (xl/sharedStrings.xml) read from source: each <si>'s text as
    openpyxl's read_string_table gives it (its <t>, then its rich runs' text; phonetic runs
    left out; "x005F_" removed).

    With limits, a string longer than max_field_bytes keeps only its size (no cell can use
    it), and a table taking more than a quarter of max_xlsx_bytes is refused: the table
    stays in memory while the sheet is read."""
    table = SharedStrings()
    keep = limits.max_field_bytes if limits else sys.maxsize  # characters: at most that many bytes
    most = limits.max_xlsx_bytes // 4 if limits else sys.maxsize
    plain: list[str] = []
    runs: list[str] = []
    text: list[str] = []
    run: list[str] = []  # the last <t> of the current rich run
    where = {"run": False, "phonetic": False, "capture": False, "over": False}
    tags: dict[str, str] = {}

    def start(name: str, attrs: dict[str, str]) -> None:
        tag = tags.get(name) or tags.setdefault(name, name.rpartition(":")[2])
        if tag == "si":
            plain.clear()
            runs.clear()
            where["over"] = False
        elif tag == "r":
            where["run"] = True
            run.clear()
        elif tag == "rPh":
            where["phonetic"] = True
        elif tag == "t" and not where["phonetic"] and not where["over"]:
            where["capture"] = True
            text.clear()

    def end(name: str) -> None:
        tag = tags[name]
        if tag == "t" and where["capture"]:
            where["capture"] = False
            # openpyxl keeps the last <t> of the <si>, and of each run
            (run if where["run"] else plain)[:] = ["".join(text)]
        elif tag == "r":
            where["run"] = False
            runs.extend(run)
        elif tag == "rPh":
            where["phonetic"] = False
        elif tag == "si":
            if where["over"]:
                table.append_over(keep + 1)
            else:
                table.append("".join(plain + runs).replace("x005F_", ""))
            for held in (text, plain, runs, run):  # the check after each block sees the <si> being read only
                held.clear()

    def characters(data: str) -> None:
        if where["capture"]:
            text.append(data)

    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    while block := source.read(_BLOCK):
        parser.Parse(block, False)
        # Checked once a block: the <si> being read holds at most keep characters and a block's.
        if sum(map(len, text)) + sum(map(len, plain)) + sum(map(len, runs)) + sum(map(len, run)) > keep:
            where["over"], where["capture"] = True, False
            for held in (text, plain, runs, run):
                held.clear()
        if table.nbytes > most:
            assert limits is not None
            raise LimitExceeded(
                f"the workbook's shared strings take more than {human_size(most)}, a quarter of the "
                f"max_xlsx_bytes limit ({human_size(limits.max_xlsx_bytes)})"
            )
    parser.Parse(b"", True)
    return table


def iter_rows(
    source: IO[bytes],
    shared: Strings,
    epoch: datetime.datetime,
    date_styles: set[int],
    timedelta_styles: set[int],
    meter: TextMeter | None = None,
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(row number, values) of each row of a sheet's XML, read from source: with the
    workbook's shared strings, epoch and the style ids of its date and duration formats
    (openpyxl's Workbook.epoch, _date_formats, _timedelta_formats). With a meter, the file
    limits apply (LimitExceeded naming the row) and each row's text is counted on it
    before the row is handed over."""
    reader = _SheetReader(shared, epoch, date_styles, timedelta_styles, meter.limits if meter else None)
    while True:
        block = source.read(_BLOCK)
        failure: Exception | None = None
        try:
            reader.feed(block, final=not block)
        except LimitExceeded as exc:
            failure = exc
        except Exception as exc:  # damaged XML, a bad number or shared-string index...
            failure = SheetDamaged(reader.row_number if reader.in_row else reader.last + 1, exc)
            failure.__cause__ = exc
        for number, values, size, lazy in reader.take():  # the rows before a failure first
            if meter is not None:
                meter.add(size, number)
            if lazy:
                values = tuple(shared[value.index] if value.__class__ is _Lazy else value for value in values)
            yield number, values
        if failure is not None:
            raise failure
        if not block:
            return


class SheetDamaged(Exception):
    """The sheet's XML is damaged at (or just after) sheet row `row`."""

    def __init__(self, row: int, cause: Exception) -> None:
        # clipped: a parser's message may quote a whole cell (float() does)
        super().__init__(clip(f"{type(cause).__name__}: {cause}", 200) if str(cause) else type(cause).__name__)
        self.row = row


class _Lazy:
    """A shared string left undecoded until its row is handed over."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class _SheetReader:
    """expat handlers that collect the finished rows of a sheet's XML: (number, values, the
    row's text in bytes, whether a value is _Lazy)."""

    def __init__(
        self,
        shared: Strings,
        epoch: datetime.datetime,
        date_styles: set[int],
        timedelta_styles: set[int],
        limits: Limits | None = None,
    ) -> None:
        self.shared, self.epoch = shared, epoch
        self.date_styles, self.timedelta_styles = date_styles, timedelta_styles
        self.limits = limits or Limits()
        unlimited = limits is None
        self.max_field = sys.maxsize if unlimited else self.limits.max_field_bytes
        self.max_record = sys.maxsize if unlimited else self.limits.max_record_bytes
        # A row with no more text than this has no field and is no record over a limit: one
        # comparison a cell (see refuse).
        self.fast = min(self.max_field, self.max_record)
        self.max_column = sys.maxsize if unlimited else max(self.limits.max_columns, _EXCEL_COLUMNS)
        self.fetch = shared.fetch if isinstance(shared, SharedStrings) else self.listed_fetch
        self.row_bytes = 0  # of the text of the row being read
        self.lazy = False  # the row being read has a _Lazy value
        self.rows: list[tuple[int, tuple[Any, ...], int, bool]] = []
        self.last = 0  # number of the last row produced
        self.row_number = 0
        self.in_row = False
        self.cells: dict[int, Any] = {}
        self.column = 0
        self.kind = "n"
        self.style = 0
        self.text: list[str] = []
        self.capture = False  # inside <v>, or a <t> of an inline string (not of a phonetic run)
        self.inline = False  # inside <is>
        self.phonetic = False  # inside <rPh>
        self.tags: dict[str, str] = {}  # element name as written (maybe "x:c") -> local name
        self.columns: dict[str, int] = {}  # column letters -> index
        self.parser = expat.ParserCreate()
        self.parser.buffer_text = True
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.CharacterDataHandler = self.characters

    def feed(self, block: bytes, final: bool) -> None:
        self.parser.Parse(block, final)
        # Once a block, not per piece of text: the cell being read holds at most max_field
        # characters and one block's (a finished cell's text was counted as it ended).
        if (self.capture or self.inline) and sum(map(len, self.text)) > self.max_field:
            raise field_error(self.limits, self.row_number)

    def take(self) -> list[tuple[int, tuple[Any, ...], int, bool]]:
        rows, self.rows = self.rows, []
        return rows

    def listed_fetch(self, index: int, most: int) -> tuple[int, str | None]:
        """SharedStrings.fetch when the table is a list (openpyxl's)."""
        text = self.shared[index]
        size = len(text.encode("utf-8", "surrogatepass"))
        return size, text if size <= most else None

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tag = self.tags.get(name) or self.tags.setdefault(name, name.rpartition(":")[2])
        if tag == "c":
            self.kind = attrs.get("t", "n")
            style = attrs.get("s")
            self.style = int(style) if style else 0
            ref = attrs.get("r")
            if ref:
                letters = ref.rstrip("0123456789")
                column = self.columns.get(letters)
                if column is None:
                    column = self.columns.setdefault(letters, column_index_from_string(letters))
                self.column = column
            else:
                self.column += 1
            if self.column > self.max_column:  # the row would grow without a bound
                raise LimitExceeded(
                    f"the row has a cell past column {self.max_column:,}, the last one a sheet may have "
                    f"(max_columns limit {self.limits.max_columns:,}, Excel's last column XFD)",
                    line=self.row_number,
                )
            self.text = []
        elif tag == "v":
            self.capture = not self.inline
            self.text = []
        elif tag == "t":
            self.capture = self.inline and not self.phonetic
        elif tag == "is":
            self.inline = True
            self.text = []
        elif tag == "rPh":
            self.phonetic = True
        elif tag == "row":
            ref = attrs.get("r")
            self.row_number = _row_number(ref) if ref else self.row_number + 1
            self.in_row = True
            self.cells = {}
            self.column = 0
            self.row_bytes = 0
            self.lazy = False

    def end(self, name: str) -> None:
        tag = self.tags[name]
        if tag == "c":
            self.cells[self.column] = self.value()
            self.inline = False
        elif tag == "v" or tag == "t":
            self.capture = False
        elif tag == "rPh":
            self.phonetic = False
        elif tag == "row":
            self.in_row = False
            if self.row_number > self.last:  # openpyxl drops a row that goes backwards
                self.last = self.row_number
                cells = self.cells
                width = self.column if cells else 0  # to the row's last cell, as openpyxl does
                values = tuple(cells.get(i) for i in range(1, width + 1))
                self.rows.append((self.row_number, values, self.row_bytes, self.lazy))

    def characters(self, data: str) -> None:
        if self.capture:
            self.text.append(data)

    def refuse(self, size: int) -> None:
        """A cell of size bytes brought its row past `fast`: refuse a field or a row over a limit."""
        if size > self.max_field:
            raise field_error(self.limits, self.row_number)
        if self.row_bytes > self.max_record:
            raise record_error(self.limits, self.row_number)

    def value(self) -> Any:
        """The cell's value, as openpyxl's WorkSheetParser.parse_cell makes it (data_only),
        after counting the text it stands for (a shared string: before decoding it)."""
        kind = self.kind
        if kind == "inlineStr":
            if not self.inline:
                return None
            inline = "".join(self.text)
            size = len(inline) if inline.isascii() else len(inline.encode("utf-8", "surrogatepass"))
            # Counted inline, not in a method: this runs for every cell.
            row = self.row_bytes = self.row_bytes + size
            if row > self.fast:
                self.refuse(size)
            return inline
        text = "".join(self.text) or None
        if text is None:
            return None
        if kind == "s":
            index = int(text)
            size, shared = self.fetch(index, _LAZY_BYTES)
            row = self.row_bytes = self.row_bytes + size
            if row > self.fast:
                self.refuse(size)
            if shared is None:
                self.lazy = True
                return _Lazy(index)
            return shared
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        row = self.row_bytes = self.row_bytes + size
        if row > self.fast:
            self.refuse(size)
        if kind == "n":
            number: int | float = float(text) if ("." in text or "E" in text or "e" in text) else int(text)
            if self.style in self.date_styles:
                try:
                    return from_excel(number, self.epoch, timedelta=self.style in self.timedelta_styles)
                except (OverflowError, ValueError):
                    return "#VALUE!"
            return number
        if kind == "b":
            return bool(int(text))
        if kind == "d":
            return from_ISO8601(text)
        return text  # "str" (a formula's text), "e" (an error code) and anything else: as written


def _row_number(ref: str) -> int:
    try:
        return int(ref)
    except ValueError:
        value = float(ref)
        if not value.is_integer():
            raise ValueError(f"{ref} is not a valid row number") from None
        return int(value)
