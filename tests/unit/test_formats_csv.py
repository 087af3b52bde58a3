"""CSV and TSV reading: quoting, encodings, limits and resuming."""

from __future__ import annotations

import codecs
import csv
import io
import os
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import FileRejected, LimitExceeded
from service.formats import (
    FileFormat,
    Limits,
    Record,
    detect_format,
    iter_records,
    read_header,
    splittable,
)

CSV = FileFormat("csv", "utf-8", ",", None)
DEFAULTS = Limits()


def write(tmp_path: Path, data: bytes, name: str = "input.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all(path: Path, fmt: FileFormat = CSV, limits: Limits = DEFAULTS) -> list[Record]:
    return list(iter_records(path, fmt, read_header(path, fmt, limits), limits))


def cells(records: list[Record]) -> list[object]:
    return [record.cells for record in records]


def test_quoted_delimiters_and_doubled_quotes_stay_inside_their_field(tmp_path: Path) -> None:
    path = write(tmp_path, b'a,b,c\n"x, y","say ""hi""",""\n')
    assert cells(read_all(path)) == [["x, y", 'say "hi"', ""]]


def test_quoted_newlines_stay_inside_one_record(tmp_path: Path) -> None:
    path = write(tmp_path, b'id,note\n1,"two\nlines"\n2,"three\r\nmore\nlines"\n3,x\n')
    records = read_all(path)
    assert cells(records) == [["1", "two\nlines"], ["2", "three\r\nmore\nlines"], ["3", "x"]]
    assert [(r.source_row, r.line, r.next_line) for r in records] == [(1, 2, 4), (2, 4, 7), (3, 7, 8)]


def test_crlf_and_lf_line_endings_give_the_same_records(tmp_path: Path) -> None:
    lf = read_all(write(tmp_path, b"a,b\n1,2\n3,4\n", "lf.csv"))
    crlf = read_all(write(tmp_path, b"a,b\r\n1,2\r\n3,4\r\n", "crlf.csv"))
    assert cells(lf) == cells(crlf) == [["1", "2"], ["3", "4"]]


def test_last_record_without_a_newline_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, b"a,b\n1,2")
    assert cells(read_all(path)) == [["1", "2"]]


def test_header_names_are_trimmed_and_data_starts_after_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, b" id , Name \n1,2\n")
    header = read_header(path, CSV, Limits())
    assert header.names == ["id", "Name"]
    assert (header.data_start, header.data_line) == (12, 2)


def test_utf8_bom_is_not_part_of_the_first_header_name(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffid,név\n1,Zoë\n".encode())
    fmt = detect_format(path, {})
    assert fmt.encoding == "utf-8-sig"
    assert read_header(path, fmt, Limits()).names == ["id", "név"]
    assert cells(read_all(path, fmt)) == [["1", "Zoë"]]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_a_bom_is_decoded_whatever_its_byte_order(tmp_path: Path, codec: str) -> None:
    bom = "\ufeff".encode(codec)
    path = write(tmp_path, bom + 'id,name\r\n1,Łukasz\r\n2,"a\nb"\r\n'.encode(codec))
    fmt = detect_format(path, {})
    assert fmt.encoding == "utf-16"
    assert not splittable(fmt)
    assert read_header(path, fmt, Limits()).names == ["id", "name"]
    records = read_all(path, fmt)
    assert cells(records) == [["1", "Łukasz"], ["2", "a\nb"]]
    assert [r.line for r in records] == [2, 3]


def test_latin1_is_read_when_given_as_the_encoding_option(tmp_path: Path) -> None:
    path = write(tmp_path, "name\nJosé\n".encode("latin-1"))
    fmt = detect_format(path, {"encoding": "latin-1"})
    assert cells(read_all(path, fmt)) == [["José"]]


def test_latin1_bytes_read_as_utf8_fail_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name\nAnn\nJosé\n".encode("latin-1"))
    with pytest.raises(FileRejected, match=r"^line 3: the file is not valid utf-8 text: byte 0xe9") as err:
        read_all(path)
    assert err.value.line == 3


def test_undecodable_utf16_fails_naming_the_line(tmp_path: Path) -> None:
    body = "a\n1\n2\n".encode("utf-16-le") + b"\x00\xdc" + "\n".encode("utf-16-le")  # lone surrogate
    path = write(tmp_path, b"\xff\xfe" + body)
    fmt = FileFormat("csv", "utf-16", ",", None)
    with pytest.raises(FileRejected, match="not valid utf-16") as err:
        read_all(path, fmt)
    assert err.value.line == 4


def test_a_nul_character_fails_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"a,b\n1,2\n3,\x004\n")
    with pytest.raises(FileRejected, match="NUL") as err:
        read_all(path)
    assert err.value.line == 3


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n  \r\n\t\n"])
def test_an_empty_file_is_rejected(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)
    with pytest.raises(FileRejected, match="the file is empty"):
        read_header(path, detect_format(path, {}), Limits())


def test_a_header_only_file_has_a_header_and_no_records(tmp_path: Path) -> None:
    path = write(tmp_path, b"id,email\n")
    assert read_header(path, CSV, Limits()).names == ["id", "email"]
    assert read_all(path) == []


def test_blank_lines_are_skipped_without_using_a_source_row(tmp_path: Path) -> None:
    path = write(tmp_path, b"\na,b\n1,2\n\r\n\n3,4\n,\n")
    records = read_all(path)
    assert [(r.source_row, r.line, r.cells) for r in records] == [(1, 3, ["1", "2"]), (2, 6, ["3", "4"])]


def test_a_tsv_file_splits_on_tabs_and_keeps_commas(tmp_path: Path) -> None:
    path = write(tmp_path, b'a\tb\nx,y\t"q\tz"\n', "input.tsv")
    fmt = detect_format(path, {})
    assert (fmt.kind, fmt.delimiter) == ("tsv", "\t")
    assert cells(read_all(path, fmt)) == [["x,y", "q\tz"]]


@pytest.mark.parametrize("delimiter", [";", "|"])
def test_a_sniffed_delimiter_splits_the_records(tmp_path: Path, delimiter: str) -> None:
    text = f"a{delimiter}b\n1,5{delimiter}2\n".encode()
    path = write(tmp_path, text)
    fmt = detect_format(path, {})
    assert fmt.delimiter == delimiter
    assert cells(read_all(path, fmt)) == [["1,5", "2"]]


def test_the_delimiter_option_overrides_sniffing(tmp_path: Path) -> None:
    path = write(tmp_path, b"a;b:c\n1;2:3\n")
    fmt = detect_format(path, {"delimiter": ":"})
    assert cells(read_all(path, fmt)) == [["1;2", "3"]]


def test_an_unterminated_quote_fails_naming_the_line_where_its_record_started(tmp_path: Path) -> None:
    path = write(tmp_path, b'a,b\n1,2\n3,"open\nstill open\n5,6\n')
    with pytest.raises(FileRejected, match="quoted field is never closed") as err:
        read_all(path)
    assert err.value.line == 3


def test_an_unterminated_quote_in_the_header_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, b'a,"b\n')
    with pytest.raises(FileRejected, match="never closed") as err:
        read_header(path, CSV, Limits())
    assert err.value.line == 1


def test_a_field_over_the_limit_fails_naming_max_field_bytes(tmp_path: Path) -> None:
    limits = Limits(max_field_bytes=10, max_record_bytes=1000)
    path = write(tmp_path, b"a,b\n1,2\n" + b"1," + b"x" * 11 + b"\n")
    with pytest.raises(LimitExceeded, match=r"^line 3: a field is longer than the max_field_bytes limit \(10 bytes\)"):
        read_all(path, limits=limits)


def test_a_field_at_the_limit_is_accepted(tmp_path: Path) -> None:
    limits = Limits(max_field_bytes=10, max_record_bytes=1000)
    path = write(tmp_path, 'a,b\n1,"ééééé"\n'.encode())  # 10 bytes in UTF-8
    assert cells(read_all(path, limits=limits)) == [["1", "é" * 5]]


def test_a_field_longer_than_the_csv_modules_default_limit_is_read(tmp_path: Path) -> None:
    big = "x" * 200_000  # the csv module refuses fields over 128 KiB unless told otherwise
    path = write(tmp_path, f"a\n{big}\n".encode())
    assert cells(read_all(path)) == [[big]]


def test_a_record_over_the_limit_fails_naming_max_record_bytes_and_its_first_line(tmp_path: Path) -> None:
    limits = Limits(max_field_bytes=100, max_record_bytes=30)
    path = write(tmp_path, b'a,b\n1,2\n3,"' + b"0123456789\n" * 4 + b'"\n')
    with pytest.raises(LimitExceeded, match="max_record_bytes limit \\(30 bytes\\)") as err:
        read_all(path, limits=limits)
    assert err.value.line == 3


def test_a_line_without_newline_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    limits = Limits(max_record_bytes=1024)
    path = write(tmp_path, b"a\n" + b"x" * 5_000_000)
    with pytest.raises(LimitExceeded, match="max_record_bytes limit \\(1 KiB\\)") as err:
        read_all(path, limits=limits)
    assert err.value.line == 2


def test_a_file_over_max_file_bytes_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\n1\n2\n")
    with pytest.raises(LimitExceeded, match="max_file_bytes limit \\(5 bytes\\)"):
        read_header(path, CSV, Limits(max_file_bytes=5))


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    with pytest.raises(FileRejected, match="not a regular file"):
        read_header(path, CSV, Limits())


def test_a_workbook_given_as_csv_is_rejected_with_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, b"PK\x03\x04rest of a zip")
    with pytest.raises(FileRejected, match="format=xlsx"):
        read_header(path, CSV, Limits())


def test_a_bare_carriage_return_inside_a_field_is_rejected_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"a,b\n1,x\ry\n")
    with pytest.raises(FileRejected, match="not valid CSV") as err:
        read_all(path)
    assert err.value.line == 2


def test_max_records_stops_before_reading_the_next_record(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\n1\n\xff\n")  # the bad line belongs to the next chunk
    header = read_header(path, CSV, Limits())
    records = list(iter_records(path, CSV, header, Limits(), max_records=1))
    assert cells(records) == [["1"]]


def test_resuming_without_a_line_number_counts_the_lines(tmp_path: Path) -> None:
    path = write(tmp_path, b'a\n"1\n1"\n2\n3\n')
    header = read_header(path, CSV, Limits())
    first = read_all(path)[0]
    rest = list(iter_records(path, CSV, header, Limits(), start=first.end, first_row=2))
    assert [(r.line, r.cells) for r in rest] == [(4, ["2"]), (5, ["3"])]


def test_resuming_in_the_middle_of_a_line_is_a_programming_error(tmp_path: Path) -> None:
    path = write(tmp_path, b"a\n12\n3\n")
    header = read_header(path, CSV, Limits())
    with pytest.raises(ValueError, match="not the start of a line"):
        list(iter_records(path, CSV, header, Limits(), start=3, first_row=1, first_line=2))


def resume_in_chunks(path: Path, fmt: FileFormat, size: int) -> list[Record]:
    """Read a file as consecutive chunks of size records, each resuming where the last ended."""
    header = read_header(path, fmt, Limits())
    records: list[Record] = []
    start, row, line = header.data_start, 1, header.data_line
    while chunk := list(
        iter_records(path, fmt, header, Limits(), start=start, first_row=row, first_line=line, max_records=size)
    ):
        records += chunk
        start, row, line = chunk[-1].end, chunk[-1].source_row + 1, chunk[-1].next_line
    return records


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_resuming_at_each_record_end_gives_the_same_records_as_one_pass(tmp_path: Path, encoding: str) -> None:
    text = 'id,note\r\n1,"a\r\nb"\r\n\r\n2,plain\r\n3,"x,""y""\nz"\r\n4,last'
    path = write(tmp_path, text.encode(encoding))
    fmt = detect_format(path, {})
    whole = read_all(path, fmt)
    assert len(whole) == 4
    for size in (1, 2, 3):
        assert resume_in_chunks(path, fmt, size) == whole


def test_a_utf16_file_resumes_correctly_across_decoding_chunks(tmp_path: Path) -> None:
    rows = [f'{n},"note {n}\nsecond line {"é" * (n % 7)}"' for n in range(3000)]
    text = "id,note\r\n" + "\r\n".join(rows) + "\r\n"
    path = write(tmp_path, codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    assert path.stat().st_size > 3 * 64 * 1024  # several decoding chunks
    fmt = detect_format(path, {})
    header = read_header(path, fmt, DEFAULTS)
    whole = read_all(path, fmt)
    assert len(whole) == 3000 and whole[-1].cells == ["2999", "note 2999\nsecond line " + "é" * (2999 % 7)]
    for k in (0, 1234, 2998):
        record = whole[k]
        rest = iter_records(path, fmt, header, DEFAULTS, start=record.end, first_row=k + 2)
        assert list(rest) == whole[k + 1 :]


field_text = st.text(alphabet=string.ascii_letters + ' ,;"\n\r\té€', max_size=12)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(field_text, min_size=2, max_size=2), max_size=6), size=st.integers(1, 4))
def test_what_the_csv_module_writes_reads_back_the_same_in_one_pass_or_in_chunks(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], size: int
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["a", "b"])
    writer.writerows(rows)
    path = write(tmp_path_factory.mktemp("csv"), out.getvalue().encode())
    expected = [row for row in rows if any(cell.strip() for cell in row)]
    whole = read_all(path)
    assert cells(whole) == expected
    assert resume_in_chunks(path, CSV, size) == whole
