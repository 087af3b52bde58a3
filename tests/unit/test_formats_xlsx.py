"""XLSX reading: native cell types, sheets, empty rows, damaged files and zip bombs."""

from __future__ import annotations

import re
import zipfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from service.errors import FileRejected, LimitExceeded
from service.formats import FileFormat, Limits, Record, detect_format, iter_records, read_header

XLSX = FileFormat("xlsx", "", "", None)
DEFAULTS = Limits()


def workbook(tmp_path: Path, sheets: dict[str, list[list[Any]]], name: str = "input.xlsx") -> Path:
    """Write a workbook with one worksheet per entry, rows given from row 1."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    path = tmp_path / name
    book.save(path)
    return path


def read_all(path: Path, fmt: FileFormat = XLSX, limits: Limits = DEFAULTS) -> list[Record]:
    return list(iter_records(path, fmt, read_header(path, fmt, limits), limits))


def test_cells_keep_their_native_types(tmp_path: Path) -> None:
    row = [42, 4.5, True, False, datetime(2024, 3, 1, 12, 30), date(2024, 3, 1), time(8, 15), "text"]
    path = workbook(tmp_path, {"Data": [["i", "f", "t", "b", "dt", "d", "tm", "s"], row]})
    [record] = read_all(path)
    assert record.cells[:5] == [42, 4.5, True, False, datetime(2024, 3, 1, 12, 30)]
    assert type(record.cells[0]) is int and type(record.cells[2]) is bool
    # openpyxl gives a date cell back as a datetime at midnight
    assert record.cells[5] == datetime(2024, 3, 1, 0, 0)
    assert record.cells[6:] == [time(8, 15), "text"]


def test_the_header_is_trimmed_and_empty_cells_are_none(tmp_path: Path) -> None:
    path = workbook(tmp_path, {"S": [[" id ", None, 7], ["a", None, None]]})
    header = read_header(path, XLSX, Limits())
    assert header.names == ["id", "", "7"]
    assert (header.data_start, header.data_line) == (2, 2)
    assert [r.cells for r in read_all(path)] == [["a", None, None]]


def test_empty_rows_are_skipped_and_records_carry_their_sheet_row(tmp_path: Path) -> None:
    rows: list[list[Any]] = [[None], ["id", "n"], [1, 2], [None, None], [3, 4]]
    path = workbook(tmp_path, {"S": rows})
    book = openpyxl.load_workbook(path)
    for number in range(6, 12):  # trailing rows that exist only as formatting
        book["S"].cell(row=number, column=1).number_format = "0.00"
        book["S"].cell(row=number, column=2).value = "  "
    book.save(path)
    header = read_header(path, XLSX, Limits())
    assert (header.names, header.data_start) == (["id", "n"], 3)
    records = read_all(path)
    assert [(r.source_row, r.line, r.end, r.cells) for r in records] == [(1, 3, 4, [1, 2]), (2, 5, 6, [3, 4])]


def test_short_rows_are_padded_to_the_header_and_extra_values_kept(tmp_path: Path) -> None:
    path = workbook(tmp_path, {"S": [["a", "b"], [1], [1, 2, 3]]})
    assert [r.cells for r in read_all(path)] == [[1, None], [1, 2, 3]]


def test_the_first_sheet_is_read_unless_the_sheet_option_names_another(tmp_path: Path) -> None:
    path = workbook(tmp_path, {"First": [["a"], [1]], "Second": [["b"], [2]]})
    assert [r.cells for r in read_all(path)] == [[1]]
    second = FileFormat("xlsx", "", "", "Second")
    assert read_header(path, second, Limits()).names == ["b"]
    assert [r.cells for r in read_all(path, second)] == [[2]]


def test_an_unknown_sheet_is_rejected_listing_the_sheets(tmp_path: Path) -> None:
    path = workbook(tmp_path, {"First": [["a"]], "Second": [["b"]]})
    with pytest.raises(FileRejected, match="no sheet 'Third'; its sheets are 'First', 'Second'"):
        read_header(path, FileFormat("xlsx", "", "", "Third"), Limits())


def test_an_empty_sheet_is_rejected(tmp_path: Path) -> None:
    path = workbook(tmp_path, {"Blank": []})
    with pytest.raises(FileRejected, match="the sheet 'Blank' is empty"):
        read_header(path, XLSX, Limits())


def test_a_header_only_sheet_has_no_records(tmp_path: Path) -> None:
    path = workbook(tmp_path, {"S": [["a", "b"]]})
    assert read_all(path) == []


def test_a_file_that_is_not_a_zip_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "input.xlsx"
    path.write_bytes(b"id,name\n1,x\n")
    with pytest.raises(FileRejected, match="not a valid XLSX file"):
        read_header(path, XLSX, Limits())


def test_a_zip_that_is_not_a_workbook_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "input.xlsx"
    with zipfile.ZipFile(path, "w") as package:
        package.writestr("hello.txt", "not a workbook")
    with pytest.raises(FileRejected, match="not a valid XLSX file"):
        read_header(path, XLSX, Limits())


def test_a_damaged_sheet_is_rejected_naming_the_row_not_raised_as_a_parser_error(tmp_path: Path) -> None:
    good = workbook(tmp_path, {"S": [["a"], *([n] for n in range(2000))]}, "good.xlsx")
    path = tmp_path / "input.xlsx"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for member in source.infolist():
            data = source.read(member)
            if member.filename.startswith("xl/worksheets/sheet"):
                data = data[: len(data) // 2]  # cut the sheet XML in the middle
            target.writestr(member, data)
    header = read_header(path, XLSX, Limits())
    records = iter_records(path, XLSX, header, Limits())
    with pytest.raises(FileRejected, match="the sheet 'S' is damaged") as err:
        list(records)
    assert err.value.line is not None and 2 < err.value.line < 2000


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    path = tmp_path / "input.xlsx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as package:
        package.writestr("xl/worksheets/sheet1.xml", b"\0" * 20_000_000)
    assert path.stat().st_size < 100_000
    with pytest.raises(LimitExceeded, match=r"max_xlsx_bytes limit \(1 MiB\)"):
        read_header(path, XLSX, Limits(max_xlsx_bytes=1024**2))


def test_a_workbook_under_the_uncompressed_limit_is_read(tmp_path: Path) -> None:
    path = workbook(tmp_path, {"S": [["a"], [1]]})
    total = sum(member.file_size for member in zipfile.ZipFile(path).infolist())
    assert [r.cells for r in read_all(path, limits=Limits(max_xlsx_bytes=total))] == [[1]]
    with pytest.raises(LimitExceeded):
        read_header(path, XLSX, Limits(max_xlsx_bytes=total - 1))


def test_resuming_at_each_record_end_gives_the_same_records_as_one_pass(tmp_path: Path) -> None:
    rows: list[list[Any]] = [["id", "v"], [1, "a"], [None, None], [2, "b"], [3, None], [None, None], [4, 1.5]]
    path = workbook(tmp_path, {"S": rows})
    header = read_header(path, XLSX, Limits())
    whole = read_all(path)
    assert [r.cells[0] for r in whole] == [1, 2, 3, 4]
    for k, record in enumerate(whole):
        rest = iter_records(
            path, XLSX, header, Limits(), start=record.end, first_row=k + 2, first_line=record.next_line
        )
        assert list(rest) == whole[k + 1 :]
    chunked = list(iter_records(path, XLSX, header, Limits(), max_records=2))
    assert chunked == whole[:2]


# --- the header row, .xlsm, and spreadsheet formats that are refused by name


def test_header_row_names_the_header_and_the_rows_above_it_are_ignored(tmp_path: Path) -> None:
    rows = [["Users export"], ["from the HR system", None, "2024"], ["id", "email"], ["u1", "a@x.io"], [], ["u2", None]]
    path = workbook(tmp_path, {"S": rows})
    fmt = FileFormat("xlsx", "", "", None, header_row=3)
    header = read_header(path, fmt, DEFAULTS)
    assert (header.names, header.data_start, header.data_line) == (["id", "email"], 4, 4)
    records = list(iter_records(path, fmt, header, DEFAULTS))
    assert [(r.source_row, r.line, r.cells) for r in records] == [(1, 4, ["u1", "a@x.io"]), (2, 6, ["u2", None])]
    # Without the option the first non-empty row is the header.
    assert read_header(path, XLSX, DEFAULTS).names == ["Users export"]


@pytest.mark.parametrize("row, says", [(2, "row 2 of the sheet 'S' is empty"), (9, "has no row 9")])
def test_a_header_row_that_is_empty_or_missing_is_refused_naming_it(tmp_path: Path, row: int, says: str) -> None:
    path = workbook(tmp_path, {"S": [["title"], [], ["id"], ["u1"]]})
    with pytest.raises(FileRejected, match=says) as caught:
        read_header(path, FileFormat("xlsx", "", "", None, header_row=row), DEFAULTS)
    assert "header_row" in str(caught.value)


def test_header_row_on_a_csv_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("id\nu1\n")
    with pytest.raises(FileRejected, match="header_row applies to XLSX files only"):
        detect_format(path, {"header_row": 2})


def test_an_xlsm_workbook_is_read_like_an_xlsx(tmp_path: Path) -> None:
    source = workbook(tmp_path, {"S": [["id", "n"], ["u1", 3]]})
    path = tmp_path / "macros.xlsm"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "[Content_Types].xml":  # what Excel writes for a macro-enabled workbook
                data = data.replace(
                    b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
                    b"application/vnd.ms-excel.sheet.macroEnabled.main+xml",
                )
            new.writestr(item, data)
    fmt = detect_format(path, {})
    assert fmt.kind == "xlsx"
    assert [r.cells for r in read_all(path, fmt)] == [["u1", 3]]


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as package:
        for name, data in members.items():
            package.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "name, content, says",
    [
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "old binary Excel workbook (.xls)"),
        ("renamed.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "old binary Office file"),
        ("sheet.ods", b"PK whatever", "OpenDocument spreadsheet (.ods)"),
        ("sheet.xlsb", b"PK whatever", "binary Excel workbook (.xlsb)"),
    ],
)
def test_spreadsheets_of_other_formats_are_refused_by_name(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FileRejected, match=re.escape(says)) as caught:
        detect_format(path, {"format": "xlsx"})
    assert "save it as .xlsx or CSV" in str(caught.value)


@pytest.mark.parametrize(
    "members, says",
    [
        ({"mimetype": b"application/vnd.oasis.opendocument.spreadsheet", "content.xml": b"<x/>"}, ".ods"),
        ({"[Content_Types].xml": b"<Types/>", "xl/workbook.bin": b"\x00"}, ".xlsb"),
    ],
)
def test_an_ods_or_xlsb_package_under_an_xlsx_name_is_refused_by_name(
    tmp_path: Path, members: dict[str, bytes], says: str
) -> None:
    path = _zip(tmp_path / "looks.xlsx", members)
    fmt = detect_format(path, {})
    with pytest.raises(FileRejected, match=re.escape(says)):
        read_header(path, fmt, DEFAULTS)


# Several sheets named by option sheet are read as one file.

Q1 = [["id", "email", "n"], [1, "a@x.io", 10], [None, None, None], [2, "b@x.io", 20]]
Q2 = [["Title"], [], ["N", "ID", "Email"], [30, 3, "c@x.io"]]  # other order and case, header on row 3
Q3 = [["id", "email", "n"], [4, "d@x.io", 40, "extra"]]


def test_named_sheets_are_read_one_after_the_other_in_the_first_sheets_column_order(tmp_path: Path) -> None:
    path = workbook(tmp_path, {"Q1": Q1, "Skip": [["id"], [99]], "Q3": Q3, "Q2": Q2})
    fmt = FileFormat("xlsx", "", "", ["Q1", "Q2", "Q3"], 3)  # header_row 3 for every sheet
    with pytest.raises(FileRejected, match=r"row 3 of the sheet 'Q1' is empty"):
        read_header(path, fmt, DEFAULTS)
    fmt = FileFormat("xlsx", "", "", ["Q2", "Q1", "Q3"])  # the first non-empty row of each
    with pytest.raises(FileRejected, match=r"the sheet 'Q1' does not have those of 'Q2' \(it lacks 'Title'; it adds"):
        read_header(path, fmt, DEFAULTS)

    path = workbook(tmp_path, {"Q1": Q1, "Skip": [["id"], [99]], "Q3": Q3, "Q2": Q2[2:]})
    fmt = FileFormat("xlsx", "", "", ["Q1", "Q2", "Q3"])
    header = read_header(path, fmt, DEFAULTS)
    assert header.names == ["id", "email", "n"]
    records = list(iter_records(path, fmt, header, DEFAULTS))
    assert [(r.source_row, r.line, r.cells) for r in records] == [
        (1, 2, [1, "a@x.io", 10]),
        (2, 4, [2, "b@x.io", 20]),
        (3, 2, [3, "c@x.io", 30]),  # Q2's row 2, its cells in Q1's order
        (4, 2, [4, "d@x.io", 40, "extra"]),  # a cell past the header stays, to be refused
    ]
    # A chunk of several sheets reads back from its first row, whatever the start position says.
    again = list(iter_records(path, fmt, header, DEFAULTS, start=2, first_row=3, max_records=1))
    assert [(r.source_row, r.cells) for r in again] == [(3, [3, "c@x.io", 30])]


def test_a_scan_of_named_sheets_notes_which_rows_each_gave(tmp_path: Path) -> None:
    from service.formats import scan_chunks

    path = workbook(tmp_path, {"Q1": Q1, "Empty": [["id", "email", "n"]], "Q2": Q2[2:], "Q3": Q3})
    fmt = FileFormat("xlsx", "", "", ["Q1", "Empty", "Q2", "Q3"])
    header = read_header(path, fmt, DEFAULTS)
    cuts = list(scan_chunks(path, fmt, header, DEFAULTS, chunk_rows=2, chunk_bytes=1 << 20))
    assert [[r.source_row for r in cut.records or []] for cut in cuts] == [[1, 2], [3, 4]]
    assert [note for cut in cuts for note in cut.notes] == [
        "sheet 'Q1': rows 1-2 of the job (its rows 2-4)",
        "sheet 'Empty': no rows",
        "sheet 'Q2': rows 3-3 of the job (its rows 2-2)",
        "sheet 'Q3': rows 4-4 of the job (its rows 2-2)",
    ]
    one = list(scan_chunks(path, FileFormat("xlsx", "", "", "Q1"), header, DEFAULTS, 2, 1 << 20))
    assert [cut.notes for cut in one] == [()]  # one sheet: nothing to say


def test_named_sheets_with_other_columns_or_a_missing_sheet_are_refused_naming_them(tmp_path: Path) -> None:
    path = workbook(tmp_path, {"A": [["id", "email"], [1, "a@x.io"]], "B": [["id", "mail"], [2, "b@x.io"]]})
    with pytest.raises(
        FileRejected, match=r"the sheet 'B' does not have those of 'A' \(it lacks 'email'; it adds 'mail'\)"
    ):
        read_header(path, FileFormat("xlsx", "", "", ["A", "B"]), DEFAULTS)
    with pytest.raises(FileRejected, match=r"the workbook has no sheets 'C', 'D'; its sheets are 'A', 'B'"):
        read_header(path, FileFormat("xlsx", "", "", ["A", "C", "D"]), DEFAULTS)
    twice = workbook(tmp_path, {"A": [["id"], [1]], "B": [["id", "ID"], [2, 3]]}, name="twice.xlsx")
    with pytest.raises(FileRejected, match=r"the sheet 'B' has the column 'ID' twice") as caught:
        read_header(twice, FileFormat("xlsx", "", "", ["A", "B"]), DEFAULTS)
    assert caught.value.line == 1
