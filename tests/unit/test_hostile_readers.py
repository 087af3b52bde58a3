"""Property tests: no byte sequence makes a reader crash or hang; problems come back as
FileRejected naming the line (text) or the workbook problem (xlsx), never another exception."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import formats
from service.errors import FileRejected
from service.pipeline import check_records
from service.products import ProductRegistry
from tests.conftest import ROOT

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
                whole_file = ("empty", "zip archive", "encoding", "cannot be read; save it as")
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
