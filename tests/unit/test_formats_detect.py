"""Format detection: option, extension, content; encoding, delimiter, sheet; splittability."""

from __future__ import annotations

import codecs
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import FileRejected
from service.formats import FileFormat, Limits, detect_format, iter_records, read_header, splittable


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_format_option_wins_over_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", b"a\tb\n1\t2\n")
    assert detect_format(path, {"format": "tsv"}) == FileFormat("tsv", "utf-8", "\t", None)


def test_an_unknown_format_option_is_rejected_naming_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", b"a\n")
    with pytest.raises(FileRejected, match="option format: 'json' is not one of csv, tsv, kv, xlsx"):
        detect_format(path, {"format": "json"})


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.csv", "csv"), ("a.CSV", "csv"), ("a.tsv", "tsv"), ("a.kv", "kv"), ("a.txt", "kv"), ("a.Xlsx", "xlsx")],
)
def test_the_extension_gives_the_kind(tmp_path: Path, name: str, kind: str) -> None:
    path = write(tmp_path, name, b"x,y\n")
    assert detect_format(path, {}).kind == kind


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b'a=1 b="two words"\n', "kv"),
        (b"# comment first\n\nlevel=info msg=hi\n", "kv"),
        (b"id\tname\n1\tx\n", "tsv"),
        (b"id,name\tx\n1,2\n", "csv"),
        (b"id;name\n", "csv"),
        (b"", "csv"),
    ],
)
def test_without_option_or_known_extension_the_content_gives_the_kind(tmp_path: Path, data: bytes, kind: str) -> None:
    assert detect_format(write(tmp_path, "upload.dat", data), {}).kind == kind


def test_a_zip_without_extension_is_sniffed_as_xlsx(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    path = tmp_path / "upload"
    book.save(path)
    assert detect_format(path, {"sheet": "Sheet"}) == FileFormat("xlsx", "", "", "Sheet")


@pytest.mark.parametrize(
    ("bom", "encoding"),
    [
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
        (codecs.BOM_UTF32_LE, "utf-32"),
        (b"", "utf-8"),
    ],
)
def test_a_bom_gives_the_encoding(tmp_path: Path, bom: bytes, encoding: str) -> None:
    assert detect_format(write(tmp_path, "a.csv", bom + b"a"), {}).encoding == encoding


def test_the_encoding_option_wins_over_the_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", codecs.BOM_UTF8 + b"a\n")
    assert detect_format(path, {"encoding": "cp1252"}).encoding == "cp1252"


@pytest.mark.parametrize("encoding", ["klingon", "base64"])
def test_an_unknown_or_non_text_encoding_option_is_rejected_naming_the_option(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path, "a.csv", b"a\n")
    with pytest.raises(FileRejected, match=f"option encoding: '{encoding}'"):
        detect_format(path, {"encoding": encoding})


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        (b"a,b;c\n", ","),
        (b"a;b;c\n", ";"),
        (b"a|b|c\n", "|"),
        (b"a\tb\n", "\t"),
        (b"a;b|c|d\n", "|"),
        (b'"x,y";b\n', ";"),
        (b"single\n", ","),
    ],
)
def test_a_csv_delimiter_is_sniffed_only_when_the_header_has_no_comma(
    tmp_path: Path, header: bytes, delimiter: str
) -> None:
    assert detect_format(write(tmp_path, "a.csv", header), {}).delimiter == delimiter


def test_a_tsv_is_never_sniffed(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path, "a.tsv", b"a;b\n"), {}).delimiter == "\t"


def test_the_delimiter_option_wins_for_csv_and_tsv(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path, "a.csv", b"a;b\n"), {"delimiter": "|"}).delimiter == "|"
    assert detect_format(write(tmp_path, "a.tsv", b"a;b\n"), {"delimiter": ";"}).delimiter == ";"


@pytest.mark.parametrize("delimiter", [";;", '"', "\n"])
def test_a_bad_delimiter_option_is_rejected_naming_the_option(tmp_path: Path, delimiter: str) -> None:
    with pytest.raises(FileRejected, match="option delimiter"):
        detect_format(write(tmp_path, "a.csv", b"a\n"), {"delimiter": delimiter})


def test_kv_and_xlsx_have_no_delimiter_and_only_xlsx_a_sheet(tmp_path: Path) -> None:
    fmt = detect_format(write(tmp_path, "a.kv", b"a=1\n"), {"delimiter": ";", "sheet": "S"})
    assert fmt == FileFormat("kv", "utf-8", "", None)


def test_a_directory_is_rejected_as_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(FileRejected, match="not a regular file"):
        detect_format(tmp_path, {})


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (FileFormat("csv", "utf-8", ",", None), True),
        (FileFormat("csv", "utf-8-sig", ",", None), True),
        (FileFormat("tsv", "latin-1", "\t", None), True),
        (FileFormat("csv", "shift_jis", ",", None), True),
        (FileFormat("kv", "utf-16", "", None), False),
        (FileFormat("csv", "utf-32-le", ",", None), False),
        (FileFormat("csv", "cp500", ",", None), False),
        (FileFormat("csv", "utf-7", ",", None), False),
        (FileFormat("xlsx", "", "", None), True),
    ],
)
def test_only_ascii_compatible_text_and_xlsx_are_splittable(fmt: FileFormat, expected: bool) -> None:
    assert splittable(fmt) is expected


# Bytes that matter to the readers: delimiters, quotes, line ends, invalid UTF-8, NUL, a BOM.
PIECES = [b"a", b",", b'"', b"\n", b"\r", b"=", b" ", b"\t", b"#", b"\\", b"\xff", b"\xc3\xa9", b"\0", b"\xef\xbb\xbf"]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=60) | st.lists(st.sampled_from(PIECES), max_size=30).map(b"".join),
    kind=st.sampled_from(["csv", "tsv", "kv"]),
    encoding=st.sampled_from([None, "latin-1", "utf-16", "cp500", "utf-7"]),
    limit=st.integers(1, 40),
)
def test_any_bytes_are_read_or_rejected_never_crash(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, kind: str, encoding: str | None, limit: int
) -> None:
    path = write(tmp_path_factory.mktemp("fuzz"), "upload", data)
    limits = Limits(max_field_bytes=limit, max_record_bytes=limit * 2)
    options = {"format": kind} if encoding is None else {"format": kind, "encoding": encoding}
    try:
        fmt = detect_format(path, options)
        records = list(iter_records(path, fmt, read_header(path, fmt, limits), limits))
    except FileRejected:
        return
    assert [r.source_row for r in records] == list(range(1, len(records) + 1))
