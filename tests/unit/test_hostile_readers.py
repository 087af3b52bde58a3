"""Property tests: no byte sequence makes a reader crash or hang; problems come back as
FileRejected naming the line (text) or the workbook problem (xlsx), never another exception."""

from __future__ import annotations

import io
import tempfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import formats
from service.errors import FileRejected, LimitExceeded
from service.formats import sheet_xml
from service.schema.products import ProductRegistry
from service.stages.validate import check_records
from tests.conftest import ROOT
from tests.unit.test_formats_sheet_xml import MAIN, workbook

pytestmark = pytest.mark.filterwarnings("ignore:Workbook contains no default style")
LIMITS = formats.Limits(max_file_bytes=1 << 20, max_field_bytes=200, max_record_bytes=1000, max_xlsx_bytes=1 << 20)
PRODUCTS = ProductRegistry.load(ROOT / "schemas")
# Bytes that matter to the readers, mixed with arbitrary ones.
ALPHABET = [
    b'"',
    b",",
    b"\t",
    b";",
    b"|",
    b"\n",
    b"\r",
    b"=",
    b"\\",
    b" ",
    b"#",
    b"a",
    b"email",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
]
TRICKY = st.lists(st.sampled_from(ALPHABET) | st.binary(max_size=4), max_size=300).map(b"".join)
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_all(content: bytes, kind: str) -> list[formats.Record]:
    """Run detect, header and records over content; FileRejected is the only allowed failure."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input.{kind}"
        path.write_bytes(content)
        try:
            fmt = formats.detect_format(path, {"format": kind})
            header = formats.read_header(path, fmt, LIMITS)
            records = list(formats.iter_records(path, fmt, header, LIMITS))
        except FileRejected as exc:
            assert str(exc).strip(), "an error must say what is wrong"
            if kind != "xlsx" and not isinstance(exc, formats_limit_types()):
                # A problem inside the text names its line; only whole-file verdicts may not.
                # (Bytes that start as a compressed stream does are read as one: its verdicts name it.)
                compressed = ("gzip", "bzip2", "xz", "zstd", "tar archive", "max_compression_ratio")
                whole_file = (
                    "empty",
                    "zip archive",
                    "ZIP archive",
                    "encoding",
                    "cannot be read; save it as",
                    *compressed,
                )
                assert "line" in str(exc) or any(w in str(exc) for w in whole_file), str(exc)
            return []
        columns = (
            list(PRODUCTS.get("users").map_header(header.names).fields)
            if kind != "kv" and _has_users_header(header)
            else []
        )
        # Whatever the reader yields, the product layer turns it into data or row errors.
        for record, data, errors in check_records(PRODUCTS.get("users"), columns, iter(records)):
            assert (data is None) == bool(errors), (record, data, errors)
        return records


def formats_limit_types() -> tuple[type, ...]:
    from service.errors import LimitExceeded

    return (LimitExceeded,)


def _has_users_header(header: formats.Header) -> bool:
    try:
        PRODUCTS.get("users").map_header(header.names)
    except FileRejected:
        return False
    return True


@SETTINGS
@given(content=st.binary(max_size=3000))
def test_arbitrary_bytes_as_csv_give_records_or_a_clear_rejection(content: bytes) -> None:
    read_all(content, "csv")


@SETTINGS
@given(content=TRICKY)
def test_quote_and_delimiter_soup_as_csv_gives_records_or_a_clear_rejection(content: bytes) -> None:
    read_all(b"external_id,email\n" + content, "csv")


@SETTINGS
@given(content=TRICKY)
def test_quote_and_delimiter_soup_as_tsv_gives_records_or_a_clear_rejection(content: bytes) -> None:
    read_all(b"external_id\temail\n" + content, "tsv")


@SETTINGS
@given(content=TRICKY)
def test_key_value_soup_gives_records_or_a_clear_rejection(content: bytes) -> None:
    for record in read_all(content, "kv"):
        assert record.error is None or record.error.startswith(f"line {record.line}")


@SETTINGS
@given(content=st.binary(max_size=2000))
def test_arbitrary_bytes_as_xlsx_are_rejected_as_not_a_workbook(content: bytes) -> None:
    read_all(content, "xlsx")


@SETTINGS
@given(
    member=st.sampled_from(["[Content_Types].xml", "xl/workbook.xml", "xl/worksheets/sheet1.xml"]),
    junk=st.binary(max_size=500),
)
def test_a_zip_with_junk_parts_is_rejected_cleanly(member: str, junk: bytes) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, junk)
    read_all(buffer.getvalue(), "xlsx")


@SETTINGS
@given(rows=st.lists(st.lists(st.text(alphabet='ab,"\n\r é', max_size=8), min_size=2, max_size=2), max_size=30))
def test_resuming_at_any_record_end_reads_the_same_records_as_one_pass(rows: list[list[str]]) -> None:
    import csv

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["external_id", "email"])
    writer.writerows(rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.csv"
        path.write_text(text.getvalue(), encoding="utf-8")
        fmt = formats.detect_format(path, {})
        header = formats.read_header(path, fmt, formats.Limits())
        whole = list(formats.iter_records(path, fmt, header, formats.Limits()))
        for k, record in enumerate(whole):
            rest = list(
                formats.iter_records(
                    path, fmt, header, formats.Limits(), start=record.end, first_row=k + 2, first_line=record.next_line
                )
            )
            assert [(r.source_row, r.line, r.cells) for r in rest] == [
                (r.source_row, r.line, r.cells) for r in whole[k + 1 :]
            ]


# ------------------------------------------------- what a small file may cost (SPEC 7, issue 18)

MiB = 1024**2
XLSX = formats.FileFormat("xlsx", "", "", None)
CSV = formats.FileFormat("csv", "utf-8", ",", None)
LIMITS_1K = formats.Limits(max_field_bytes=1000)
BIG = 1_000_000  # characters of the one shared string the hostile workbooks use everywhere


def sheet(rows: list[str]) -> str:
    """A worksheet's XML from the inner XML of its rows (row r="1" is the header)."""
    body = "".join(f'<row r="{n}">{cells}</row>' for n, cells in enumerate(rows, 1))
    return f'<worksheet xmlns="{MAIN}"><sheetData>{body}</sheetData></worksheet>'


def book(tmp_path: Path, rows: list[str], shared: list[str], name: str = "book.xlsx") -> Path:
    path = tmp_path / name
    path.write_bytes(workbook(sheet(rows), shared))
    return path


HEADER_ROW = '<c t="inlineStr"><is><t>external_id</t></is></c><c t="inlineStr"><is><t>email</t></is></c>'
USES = '<c t="s"><v>0</v></c>'  # a cell that stands for shared string 0


def scan_all(path: Path, fmt: formats.FileFormat, limits: formats.Limits, chunk_bytes: int = 32 * MiB) -> list[Any]:
    """Run the planning scan to its end, keeping only each chunk's size (as the pipeline does)."""
    header = formats.read_header(path, fmt, limits)
    return [
        (cut.rows, len(cut.records or ()))
        for cut in formats.scan_chunks(path, fmt, header, limits, 20_000, chunk_bytes)
    ]


def peak_of(action: Callable[[], object]) -> tuple[BaseException | None, int]:
    """What the action raised (or None) and the most memory Python held while it ran."""
    tracemalloc.start()
    try:
        action()
        raised = None
    except LimitExceeded as exc:
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak


def test_a_shared_string_over_the_field_limit_fails_the_file_as_the_same_csv_cell_does(tmp_path: Path) -> None:
    text = "é" * 600_000  # 1.2 MB of UTF-8, 600,000 characters
    path = book(tmp_path, [HEADER_ROW, f'<c t="inlineStr"><is><t>u1</t></is></c>{USES}'], [text])
    with pytest.raises(LimitExceeded) as from_sheet:
        scan_all(path, XLSX, formats.Limits())
    same = tmp_path / "same.csv"
    same.write_text(f"external_id,email\nu1,{text}\n", encoding="utf-8")
    with pytest.raises(LimitExceeded) as from_csv:
        scan_all(same, CSV, formats.Limits())
    assert (
        str(from_sheet.value)
        == str(from_csv.value)
        == ("line 2: a field is longer than the max_field_bytes limit (1 MiB)")
    )


def test_twenty_thousand_uses_of_one_shared_string_in_a_row_fail_on_the_record_limit_unbuilt(tmp_path: Path) -> None:
    path = book(tmp_path, [HEADER_ROW, USES * 20_000], ["x" * BIG])
    assert path.stat().st_size < 20_000  # a few KB on disk, 20 GB of text
    raised, peak = peak_of(lambda: scan_all(path, XLSX, formats.Limits()))
    assert str(raised) == "line 2: a record is longer than the max_record_bytes limit (10 MiB)"
    assert peak < 40 * MiB, peak // MiB  # the row's 11 MB were counted, never built


def test_a_shared_string_used_in_every_row_counts_at_each_use_toward_max_text_bytes(tmp_path: Path) -> None:
    rows = [HEADER_ROW] + [f'<c t="inlineStr"><is><t>u{n}</t></is></c>{USES}' for n in range(20_000)]
    path = book(tmp_path, rows, ["x" * BIG])
    assert path.stat().st_size < 200_000
    limits = formats.Limits(max_text_bytes=100 * MiB)
    raised, peak = peak_of(lambda: scan_all(path, XLSX, limits, chunk_bytes=8 * MiB))
    # the header (external_id, email: 16 bytes) and 104 rows of u<n> + 1,000,000 pass 100 MiB at row 106
    assert str(raised) == (
        "line 106: the workbook's text (a shared string counts at each cell that uses it) is longer than "
        "the max_text_bytes limit (100 MiB)"
    )
    assert peak < 40 * MiB, peak // MiB  # a chunk holds at most chunk_bytes of text (8 MiB) and one record


def test_a_workbooks_chunks_end_at_chunk_bytes_of_the_text_their_cells_stand_for(tmp_path: Path) -> None:
    rows = [HEADER_ROW] + [f"<c><v>{n}</v></c>{USES}" for n in range(10)]
    path = book(tmp_path, rows, ["y" * 1000])
    # each record: 1 + 1,000 bytes of text and 2 cells at 48: 1,097; three of them pass 3,000
    assert scan_all(path, XLSX, formats.Limits(), chunk_bytes=3000) == [(3, 3), (3, 3), (3, 3), (1, 1)]
    assert scan_all(path, XLSX, formats.Limits()) == [(10, 10)]


def test_an_unused_shared_string_over_the_field_limit_is_not_kept_and_not_refused(tmp_path: Path) -> None:
    path = book(tmp_path, [HEADER_ROW, '<c><v>1</v></c><c t="s"><v>1</v></c>'], ["z" * (2 * MiB), "a@example.com"])
    raised, peak = peak_of(lambda: scan_all(path, XLSX, formats.Limits()))
    assert raised is None
    assert peak < 2 * MiB + 512 * 1024, peak  # not 2 MiB of text kept, nor copies of it


def test_a_shared_string_table_over_a_quarter_of_max_xlsx_bytes_is_refused(tmp_path: Path) -> None:
    path = book(tmp_path, [HEADER_ROW], [f"s{n}-" + "w" * 500 for n in range(3000)])  # 1.5 MB of strings
    with pytest.raises(LimitExceeded, match=r"shared strings take more than 1 MiB, a quarter of the max_xlsx_bytes"):
        formats.read_header(path, XLSX, formats.Limits(max_xlsx_bytes=4 * MiB))


def test_an_inline_string_over_the_field_limit_is_refused_before_it_is_built(tmp_path: Path) -> None:
    path = book(tmp_path, [HEADER_ROW, f'<c t="inlineStr"><is><t>{"q" * (8 * MiB)}</t></is></c>'], [])
    raised, peak = peak_of(lambda: scan_all(path, XLSX, formats.Limits()))
    assert str(raised) == "line 2: a field is longer than the max_field_bytes limit (1 MiB)"
    assert peak < 6 * MiB, peak // MiB


def test_a_row_of_cells_past_the_last_column_a_sheet_may_have_is_refused(tmp_path: Path) -> None:
    path = book(tmp_path, [HEADER_ROW, "<c/>" * 100_000], [])
    raised, peak = peak_of(lambda: scan_all(path, XLSX, formats.Limits()))
    assert str(raised).startswith("line 2: the row has a cell past column 16,384"), raised
    assert "max_columns" in str(raised)


@pytest.mark.parametrize("kind, delimiter", [("csv", ","), ("tsv", "\t")])
def test_a_header_over_max_columns_fails_at_the_header_naming_the_limit(
    tmp_path: Path, kind: str, delimiter: str
) -> None:
    path = tmp_path / f"wide.{kind}"
    fmt = formats.FileFormat(kind, "utf-8", delimiter, None)
    path.write_text(delimiter.join(f"c{n}" for n in range(16_384)) + "\n" + "1\n")
    assert len(formats.read_header(path, fmt, formats.Limits()).names) == 16_384
    path.write_text("id" + delimiter * 1_000_000 + "\n1\n")  # 1,000,001 columns
    with pytest.raises(LimitExceeded) as caught:
        formats.read_header(path, fmt, formats.Limits())
    assert str(caught.value) == "line 1: the header has 1,000,001 columns, more than the max_columns limit (16,384)"


def test_a_workbook_header_over_max_columns_fails_at_the_header(tmp_path: Path) -> None:
    path = book(tmp_path, ['<c t="inlineStr"><is><t>h</t></is></c>' * 40, "<c><v>1</v></c>"], [])
    with pytest.raises(LimitExceeded) as caught:
        formats.read_header(path, XLSX, formats.Limits(max_columns=39))
    assert str(caught.value) == "line 1: the header has 40 columns, more than the max_columns limit (39)"


def test_a_kv_file_fails_at_the_line_that_brings_its_distinct_keys_over_max_columns(tmp_path: Path) -> None:
    path = tmp_path / "keys.kv"
    path.write_text("".join(f"k{n}=1 external_id=u{n}\n" for n in range(100_000)))
    fmt = formats.FileFormat("kv", "utf-8", "", None)
    # external_id and k0..k16382 are 16,384 keys: line 16,384 brings the 16,385th
    message = (
        "line 16384: the file has more distinct keys than the max_columns limit (16,384); "
        "a key=value file's keys are its columns"
    )
    with pytest.raises(LimitExceeded) as caught:
        scan_all(path, fmt, formats.Limits())
    assert str(caught.value) == message
    header = formats.read_header(path, fmt, formats.Limits())
    with pytest.raises(LimitExceeded) as again:
        list(formats.iter_records(path, fmt, header, formats.Limits()))
    assert str(again.value) == message


def test_a_kv_files_distinct_keys_together_are_bounded_like_a_header(tmp_path: Path) -> None:
    path = tmp_path / "long-keys.kv"
    path.write_text("".join(f"{'k' * 1000}{n}=1\n" for n in range(100)))
    with pytest.raises(LimitExceeded, match=r"^line 10: the file's distinct keys are longer together than the max_rec"):
        scan_all(path, formats.FileFormat("kv", "utf-8", "", None), formats.Limits(max_record_bytes=10_000))


def test_a_text_file_over_max_text_bytes_is_refused_before_its_first_chunk(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("external_id,email\n" + "u,a@example.com\n" * 1000)
    limits = formats.Limits(max_text_bytes=10_000)
    header = formats.read_header(path, CSV, limits)
    cuts = formats.scan_chunks(path, CSV, header, limits, 100, 1 << 20)
    with pytest.raises(LimitExceeded, match=r"^the file's text is longer than the max_text_bytes limit \(9.8 KiB\)$"):
        next(cuts)


def test_messages_about_a_header_name_its_first_columns_only(tmp_path: Path) -> None:
    from service.stages.fetch import map_columns

    users = PRODUCTS.get("users")
    names = ["external_id", "email", *(f"extra-{n}-" + "n" * 5000 for n in range(16_000)), "", ""]
    fields, warnings, notes = map_columns(users, names)
    assert len(fields) == len(names)
    assert all(len(line) < 1000 for line in warnings), [len(line) for line in warnings]
    assert warnings[0].startswith("unknown column(s) ignored: extra-0-nnn") and warnings[0].endswith(" and 15,990 more")
    assert warnings[1] == "column(s) with a blank header ignored: 16003, 16004"
    long_alias = "Email" + " " * 100_000 + "Address"  # an alias, however spaced
    assert len(map_columns(users, ["external_id", long_alias])[2][0]) < 200
    with pytest.raises(FileRejected) as caught:
        users.map_header(["external_id", "email", "x" * MiB, "x" * MiB])
    assert len(str(caught.value)) < 200


def test_a_long_shared_string_keeps_its_size_only_and_every_other_string_stays_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strings = ["L1-" + "x" * 1500, "s2", "L3-" + "y" * 1500, "s4"]
    items = [f"<si><t>{strings[0]}</t></si>", "<si><t>s2</t></si>", "<si><r><t>L3-</t></r><r><t>" + "y" * 1500]
    xml = f'<sst xmlns="{MAIN}">' + "".join(items) + "</t></r></si><si><t>s4</t></si></sst>"
    for block in range(1, len(xml) + 1, 3):  # a block boundary at every place, between two strings too
        monkeypatch.setattr(sheet_xml, "_BLOCK", block)
        table = sheet_xml.read_shared_strings(io.BytesIO(xml.encode()), LIMITS_1K)
        for n, text in enumerate(strings):
            size, kept = table.fetch(n, 1 << 30)
            if text.startswith("L"):  # too long: kept whole when a block held it, else its size only
                assert size > 1000 and kept in (None, text), (block, n, size)
            else:
                assert (size, kept) == (len(text), text), (block, n, size, kept)
