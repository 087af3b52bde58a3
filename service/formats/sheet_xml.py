"""A worksheet's rows read straight from its XML with expat, about 15x openpyxl's read-only pass,
and the workbook's shared strings kept compact.

openpyxl still opens the workbook (sheet list, date styles, epoch); the shared strings and
the sheet's rows go through these parsers. It gives the values openpyxl's read-only,
data-only `iter_rows(values_only=True)` gives, row for row (a property test holds it to
that): numbers as int or float, date-styled numbers as dates, booleans, shared and inline
strings (rich text runs joined, phonetic runs left out), cached formula results, error
codes as text; a row's values run to its last cell (in document order), gaps are None. Rows missing from the
XML are not produced (they are empty), nor rows whose number goes backwards.
"""

from __future__ import annotations

import datetime
from array import array
from collections.abc import Iterator
from typing import IO, Any, Protocol
from xml.parsers import expat

from openpyxl.utils.cell import column_index_from_string
from openpyxl.utils.datetime import from_excel, from_ISO8601

_BLOCK = 256 * 1024  # bytes of sheet XML handed to expat at a time


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

    def append(self, text: str) -> None:
        self._text += text.encode("utf-8", "surrogatepass")
        self._ends.append(len(self._text))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        if index < 0:
            raise IndexError(f"shared string {index} does not exist")
        end = self._ends[index]  # IndexError past the table
        start = self._ends[index - 1] if index else 0
        return self._text[start:end].decode("utf-8", "surrogatepass")


def read_shared_strings(source: IO[bytes]) -> SharedStrings:
    """The shared-string table (xl/sharedStrings.xml) read from source: each <si>'s text as
    openpyxl's read_string_table gives it (its <t>, then its rich runs' text; phonetic runs
    left out; "x005F_" removed)."""
    table = SharedStrings()
    plain: list[str] = []
    runs: list[str] = []
    text: list[str] = []
    run: list[str] = []  # the last <t> of the current rich run
    where = {"run": False, "phonetic": False, "capture": False}
    tags: dict[str, str] = {}

    def start(name: str, attrs: dict[str, str]) -> None:
        tag = tags.get(name) or tags.setdefault(name, name.rpartition(":")[2])
        if tag == "si":
            plain.clear()
            runs.clear()
        elif tag == "r":
            where["run"] = True
            run.clear()
        elif tag == "rPh":
            where["phonetic"] = True
        elif tag == "t" and not where["phonetic"]:
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
            table.append("".join(plain + runs).replace("x005F_", ""))

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
    parser.Parse(b"", True)
    return table


def iter_rows(
    source: IO[bytes],
    shared: Strings,
    epoch: datetime.datetime,
    date_styles: set[int],
    timedelta_styles: set[int],
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(row number, values) of each row of a sheet's XML, read from source: with the
    workbook's shared strings, epoch and the style ids of its date and duration formats
    (openpyxl's Workbook.epoch, _date_formats, _timedelta_formats)."""
    reader = _SheetReader(shared, epoch, date_styles, timedelta_styles)
    while True:
        block = source.read(_BLOCK)
        try:
            reader.feed(block, final=not block)
        except Exception as exc:  # damaged XML, a bad number or shared-string index...
            done = reader.take()
            yield from done
            raise SheetDamaged(reader.row_number if reader.in_row else reader.last + 1, exc) from exc
        yield from reader.take()
        if not block:
            return


class SheetDamaged(Exception):
    """The sheet's XML is damaged at (or just after) sheet row `row`."""

    def __init__(self, row: int, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__)
        self.row = row


class _SheetReader:
    """expat handlers that collect the finished rows of a sheet's XML."""

    def __init__(
        self,
        shared: Strings,
        epoch: datetime.datetime,
        date_styles: set[int],
        timedelta_styles: set[int],
    ) -> None:
        self.shared, self.epoch = shared, epoch
        self.date_styles, self.timedelta_styles = date_styles, timedelta_styles
        self.rows: list[tuple[int, tuple[Any, ...]]] = []
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

    def take(self) -> list[tuple[int, tuple[Any, ...]]]:
        rows, self.rows = self.rows, []
        return rows

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
                self.rows.append((self.row_number, tuple(cells.get(i) for i in range(1, width + 1))))

    def characters(self, data: str) -> None:
        if self.capture:
            self.text.append(data)

    def value(self) -> Any:
        """The cell's value, as openpyxl's WorkSheetParser.parse_cell makes it (data_only)."""
        kind = self.kind
        if kind == "inlineStr":
            return "".join(self.text) if self.inline else None
        text = "".join(self.text) or None
        if text is None:
            return None
        if kind == "n":
            number: int | float = float(text) if ("." in text or "E" in text or "e" in text) else int(text)
            if self.style in self.date_styles:
                try:
                    return from_excel(number, self.epoch, timedelta=self.style in self.timedelta_styles)
                except (OverflowError, ValueError):
                    return "#VALUE!"
            return number
        if kind == "s":
            return self.shared[int(text)]
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
