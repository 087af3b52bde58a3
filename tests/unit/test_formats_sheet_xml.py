"""The expat sheet reader gives exactly the values openpyxl's read-only, data-only pass gives.

Workbooks are written part by part, so that every kind of cell Excel and other tools write
can be put in: shared and inline strings (rich text, phonetic runs), numbers, date-, time-
and duration-styled numbers in both epochs, booleans, ISO dates, formulas with cached
values, error codes, empty and styled-empty cells, cells and rows without references,
prefixed element names, rows going backwards.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any
from xml.sax.saxutils import escape

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.formats import sheet_xml

pytestmark = [
    pytest.mark.filterwarnings("ignore:Workbook contains no default style"),
    pytest.mark.filterwarnings("ignore:Cell .* is marked as a date"),
]

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
# Styles: 0 general, 1 a date, 2 a date-time, 3 a time, 4 a duration ([h]:mm), 5 a number format.
STYLES = (
    f"""<styleSheet xmlns="{MAIN}"><numFmts count="2"><numFmt numFmtId="164" formatCode="[h]:mm:ss"/>
<numFmt numFmtId="165" formatCode="0.00"/></numFmts>
<fonts count="1"><font/></fonts><fills count="1"><fill><patternFill/></fill></fills><borders count="1"><border/></borders>
<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>
<cellXfs count="6">"""
    + "".join(
        f'<xf numFmtId="{n}" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        for n in (0, 14, 22, 21, 164, 165)
    )
    + "</cellXfs></styleSheet>"
)


def workbook(sheet_xml_text: str, shared: list[str], date1904: bool = False) -> bytes:
    """An .xlsx package with one sheet whose XML is given."""
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/styles.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{MAIN}" xmlns:r="{REL}">'
            + ('<workbookPr date1904="1"/>' if date1904 else "")
            + '<sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{REL}/styles" Target="styles.xml"/>'
            f'<Relationship Id="rId3" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'
        ),
        "xl/styles.xml": STYLES,
        "xl/sharedStrings.xml": (
            f'<sst xmlns="{MAIN}" count="{len(shared)}" uniqueCount="{len(shared)}">'
            + "".join(f'<si><t xml:space="preserve">{escape(text)}</t></si>' for text in shared)
            + "</sst>"
        ),
        "xl/worksheets/sheet1.xml": sheet_xml_text,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for name, text in parts.items():
            package.writestr(name, text)
    return buffer.getvalue()


def both(data: bytes) -> tuple[list[tuple[int, tuple[Any, ...]]], list[tuple[int, tuple[Any, ...]]]]:
    """(ours, openpyxl's) non-empty rows with their numbers."""
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheet = book.worksheets[0]
        sheet.reset_dimensions()
        theirs = [(n, v) for n, v in enumerate(sheet.iter_rows(values_only=True), 1) if any(x is not None for x in v)]
        ours = [(n, v) for n, v in rows_of(sheet) if any(x is not None for x in v)]
        return ours, theirs
    finally:
        book.close()


def rows_of(sheet: Any) -> list[tuple[int, tuple[Any, ...]]]:
    """sheet_xml's rows of an openpyxl read-only worksheet."""
    book = sheet.parent
    with sheet._get_source() as source:
        return list(
            sheet_xml.iter_rows(source, sheet._shared_strings, book.epoch, book._date_formats, book._timedelta_formats)
        )


def text(value: str) -> str:
    return escape(value).replace('"', "&quot;")


TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(" \t\n"), max_size=12)
NUMBER = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.sampled_from(["1E3", "2.5e-3", "0", "-0.0", "45376.39583333334", "0.75", "1.5", "60", "61", "2958465"]),
)


@st.composite
def cell(draw: st.DrawFn, shared: list[str]) -> str:
    """One <c> element body (without its r attribute) of some kind."""
    kind = draw(st.sampled_from(["s", "n", "date", "b", "inline", "rich", "str", "e", "d", "empty", "styled", "f"]))
    if kind == "s" and shared:
        return f'<c t="s"><v>{draw(st.integers(0, len(shared) - 1))}</v></c>'
    if kind == "n":
        return f'<c s="{draw(st.sampled_from([0, 5]))}"><v>{draw(NUMBER)}</v></c>'
    if kind == "date":
        style = draw(st.sampled_from([1, 2, 3, 4]))
        value = draw(st.sampled_from(["45376.39583333334", "0.5", "1", "60", "61", "2958465.99", "0", "367.25"]))
        return f'<c s="{style}" t="n"><v>{value}</v></c>'
    if kind == "b":
        return f'<c t="b"><v>{draw(st.sampled_from(["0", "1"]))}</v></c>'
    if kind == "inline":
        return f'<c t="inlineStr"><is><t xml:space="preserve">{text(draw(TEXT))}</t></is></c>'
    if kind == "rich":
        runs = "".join(f"<r><rPr><b/></rPr><t>{text(draw(TEXT))}</t></r>" for _ in range(draw(st.integers(1, 3))))
        phonetic = '<rPh sb="0" eb="1"><t>ふりがな</t></rPh>' if draw(st.booleans()) else ""
        return f'<c t="inlineStr"><is>{runs}{phonetic}</is></c>'
    if kind == "str":
        return f'<c t="str"><f>A1&amp;"x"</f><v>{text(draw(TEXT))}</v></c>'
    if kind == "e":
        return f'<c t="e"><v>{draw(st.sampled_from(["#DIV/0!", "#N/A", "#VALUE!"]))}</v></c>'
    if kind == "d":
        return f'<c t="d"><v>{draw(st.sampled_from(["2024-03-01T09:30:00", "2024-03-01", "09:30:00"]))}</v></c>'
    if kind == "styled":
        return '<c s="1"/>'
    if kind == "f":
        return f"<c><f>SUM(A1:A2)</f><v>{draw(NUMBER)}</v></c>"
    return "<c/>"


@st.composite
def sheets(draw: st.DrawFn) -> tuple[str, list[str], bool]:
    shared = draw(st.lists(TEXT, max_size=5))
    prefix = draw(st.sampled_from(["", "x:"]))
    rows = []
    number = 0
    for _ in range(draw(st.integers(0, 6))):
        number += draw(st.integers(1, 3))
        with_ref = draw(st.booleans())
        cells = []
        column = 0
        for _ in range(draw(st.integers(0, 5))):
            column += draw(st.integers(1, 2))
            body = draw(cell(shared))
            if draw(st.booleans()):  # with a reference like "C7"
                letters = openpyxl.utils.get_column_letter(column)
                body = body.replace("<c", f'<c r="{letters}{number}"', 1)
            cells.append(body)
        row_ref = f' r="{number}"' if with_ref else ""
        rows.append(f"<row{row_ref}>" + "".join(cells) + "</row>")
    xml = f'<worksheet xmlns="{MAIN}"><sheetData>' + "".join(rows) + "</sheetData></worksheet>"
    if prefix:
        xml = xml.replace("<", "<x:").replace("<x:/", "</x:").replace('xmlns="', 'xmlns:x="')
    return xml, shared, draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sheets())
def test_every_cell_reads_as_openpyxl_reads_it(case: tuple[str, list[str], bool]) -> None:
    xml, shared, date1904 = case
    ours, theirs = both(workbook(xml, shared, date1904))
    assert ours == theirs, xml


def test_a_rich_text_cell_joins_its_runs_and_leaves_out_the_phonetic_guide() -> None:
    xml = (
        f'<worksheet xmlns="{MAIN}"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><r><t>Ya</t></r>'
        '<r><rPr><i/></rPr><t xml:space="preserve">ma da</t></r><rPh sb="0" eb="1"><t>やまだ</t></rPh></is></c>'
        '<c r="C1" s="2"><v>45376.5</v></c><c r="D1" t="s"><v>0</v></c></row>'
        '<row r="3"><c r="B3" t="b"><v>1</v></c></row></sheetData></worksheet>'
    )
    ours, theirs = both(workbook(xml, ["shared one"]))
    assert ours == theirs
    assert ours[0][1][0] == "Yama da" and ours[0][1][3] == "shared one"
    assert ours[1] == (3, (None, True))


def test_the_bench_style_sheet_reads_like_openpyxl() -> None:
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("users")
    sheet.append(["external_id", "email", "age", "active", "created_at"])
    import datetime

    for i in range(1, 200):
        sheet.append([f"u{i}", f"u{i}@example.com", i % 90, i % 2 == 0, datetime.datetime(2024, 1, 1 + i % 28, 9, 30)])
    buffer = io.BytesIO()
    book.save(buffer)
    ours, theirs = both(buffer.getvalue())
    assert len(ours) == 200 and ours == theirs


@pytest.mark.parametrize("broken", ['<c t="s"><v>7</v></c>', '<c t="b"><v>x</v></c>', "<c><v>1.2.3</v></c>"])
def test_a_damaged_cell_raises_rather_than_reading_something_else(broken: str) -> None:
    xml = f'<worksheet xmlns="{MAIN}"><sheetData><row r="1">{broken}</row></sheetData></worksheet>'
    book = openpyxl.load_workbook(io.BytesIO(workbook(xml, ["only"])), read_only=True, data_only=True)
    with pytest.raises(sheet_xml.SheetDamaged) as caught:
        rows_of(book.worksheets[0])
    assert caught.value.row == 1 and isinstance(caught.value.__cause__, IndexError | ValueError)


@pytest.mark.parametrize("damage", ['<c r="B{n}" t="s"><v>99</v></c>', '<c r="B{n}"><v>1<2</v></c>'])
def test_damage_deep_in_a_big_sheet_names_its_own_row(damage: str) -> None:
    rows = [
        f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>row {n} padding padding</t></is></c></row>'
        for n in range(1, 5001)
    ]
    rows[1900] = f'<row r="1901">{damage.format(n=1901)}</row>'
    # A <dimension> first: openpyxl reads the XML no further when it opens the sheet.
    xml = (
        f'<worksheet xmlns="{MAIN}"><dimension ref="A1:B5000"/><sheetData>' + "".join(rows) + "</sheetData></worksheet>"
    )
    book = openpyxl.load_workbook(io.BytesIO(workbook(xml, ["only"])), read_only=True, data_only=True)
    sheet = book.worksheets[0]
    seen: list[int] = []
    with pytest.raises(sheet_xml.SheetDamaged) as caught, sheet._get_source() as source:
        for number, _ in sheet_xml.iter_rows(
            source, sheet._shared_strings, book.epoch, book._date_formats, book._timedelta_formats
        ):
            seen.append(number)
    assert caught.value.row == 1901
    assert seen == list(range(1, 1901))  # every row before the damage, none after


@st.composite
def shared_item(draw: st.DrawFn) -> str:
    """One <si> of a shared-string table, of the shapes spreadsheet writers use."""
    kind = draw(st.sampled_from(["plain", "rich", "phonetic", "empty", "escaped", "prefixed", "runless"]))
    words = draw(st.lists(TEXT, min_size=1, max_size=3))
    if kind == "plain":
        return f'<si><t xml:space="preserve">{text(words[0])}</t></si>'
    if kind == "rich":
        runs = "".join(f'<r><rPr><b/></rPr><t xml:space="preserve">{text(w)}</t></r>' for w in words)
        return f"<si>{runs}</si>"
    if kind == "phonetic":
        return (
            f'<si><t>{text(words[0])}</t><rPh sb="0" eb="1"><t>{text(words[-1])}</t></rPh><phoneticPr fontId="0"/></si>'
        )
    if kind == "empty":
        return "<si/>" if len(words) == 1 else "<si><t/></si>"
    if kind == "escaped":
        return f"<si><t>{text(words[0])}_x005F_x000D_{text(words[-1])}</t></si>"
    if kind == "prefixed":
        return f"<x:si><x:r><x:t>{text(words[0])}</x:t></x:r><x:r><x:t>{text(words[-1])}</x:t></x:r></x:si>"
    return f"<si><r><rPr><i/></rPr></r><r><t>{text(words[0])}</t></r></si>"  # a run without text


@settings(max_examples=300, deadline=None)
@given(st.lists(shared_item(), max_size=8))
def test_the_shared_strings_read_as_openpyxl_reads_them(items: list[str]) -> None:
    from openpyxl.reader.strings import read_string_table

    xml = f'<sst xmlns="{MAIN}" xmlns:x="{MAIN}" count="{len(items)}">{"".join(items)}</sst>'.encode()
    theirs = read_string_table(io.BytesIO(xml))
    table = sheet_xml.read_shared_strings(io.BytesIO(xml))
    assert [table[i] for i in range(len(table))] == theirs, xml
    with pytest.raises(IndexError):
        table[len(table)]
    with pytest.raises(IndexError):
        table[-1]


def test_a_workbooks_shared_strings_reach_its_cells_through_the_compact_table(tmp_path: Any) -> None:
    from service.formats import FileFormat, Limits, iter_records, read_header

    xml = (
        f'<worksheet xmlns="{MAIN}"><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>'
        '<row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" t="s"><v>3</v></c></row></sheetData></worksheet>'
    )
    path = tmp_path / "shared.xlsx"
    path.write_bytes(workbook(xml, ["id", "naïve", "ü-1 ☃", ""]))
    fmt = FileFormat("xlsx", "", "", None)
    header = read_header(path, fmt, Limits())
    assert header.names == ["id", "naïve"]
    assert [r.cells for r in iter_records(path, fmt, header, Limits())] == [["ü-1 ☃", ""]]
