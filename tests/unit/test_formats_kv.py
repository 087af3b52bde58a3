"""key=value (logfmt) reading: pairs, quoting, skipped lines, bad lines as bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import FileRejected, LimitExceeded
from service.formats import FileFormat, Limits, Record, iter_records, read_header
from service.formats.kv import _parse_pairs, parse_line

KV = FileFormat("kv", "utf-8", "", None)
DEFAULTS = Limits()


def write(tmp_path: Path, data: bytes, name: str = "input.kv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all(path: Path, fmt: FileFormat = KV, limits: Limits = DEFAULTS) -> list[Record]:
    return list(iter_records(path, fmt, read_header(path, fmt, limits), limits))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a=1 b=two", {"a": "1", "b": "two"}),
        ('name="Ann Lee" role=admin', {"name": "Ann Lee", "role": "admin"}),
        ('q="say \\"hi\\"" path="C:\\\\dir"', {"q": 'say "hi"', "path": "C:\\dir"}),
        ('raw="a\\nb"', {"raw": "a\\nb"}),
        ("a= b=", {"a": "", "b": ""}),
        ('a="" b=x', {"a": "", "b": "x"}),
        ("  a=1 \t\t b=2  \r\n", {"a": "1", "b": "2"}),
        ("url=http://x/?q=1", {"url": "http://x/?q=1"}),
        ("", {}),
    ],
)
def test_a_line_splits_into_its_pairs(line: str, expected: dict[str, str]) -> None:
    assert parse_line(line) == (expected, None)


@pytest.mark.parametrize(
    ("line", "cells", "error"),
    [
        ("a=1 oops b=2", {"a": "1"}, "'oops' is not a key=value pair"),
        ('a=1 b="open value', {"a": "1"}, "the quoted value of 'b' is not closed"),
        ('a="x\\"', {}, "the quoted value of 'a' is not closed"),
        ("a=1 =2", {"a": "1"}, "'=2' has an empty key"),
        ("a=1 b=2 a=3", {"a": "1", "b": "2"}, "the key 'a' appears twice"),
        ('a="x"y', {}, "the quoted value of 'a' is followed by text; put a blank between pairs"),
        ('a=x"y', {}, "the value of 'a' contains a '\"'"),
    ],
)
def test_a_malformed_line_gives_the_pairs_before_the_fault_and_says_what_is_wrong(
    line: str, cells: dict[str, str], error: str
) -> None:
    parsed, message = parse_line(line)
    assert parsed == cells
    assert message is not None and message.startswith(error)


def test_comments_and_blank_lines_are_skipped_without_using_a_source_row(tmp_path: Path) -> None:
    path = write(tmp_path, b"# export of users\n\na=1\n   # indented comment\n \t \r\nb=2\n")
    records = read_all(path)
    assert [(r.source_row, r.line, r.cells, r.error) for r in records] == [
        (1, 3, {"a": "1"}, None),
        (2, 6, {"b": "2"}, None),
    ]


def test_a_malformed_line_makes_one_bad_record_and_reading_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path, b'a=1\nb="broken\nc=3\n')
    records = read_all(path)
    assert [(r.source_row, r.cells, r.error) for r in records] == [
        (1, {"a": "1"}, None),
        (2, {}, "line 2: the quoted value of 'b' is not closed"),
        (3, {"c": "3"}, None),
    ]


def test_the_header_has_no_names_and_data_starts_after_the_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffa=é\n".encode())
    fmt = FileFormat("kv", "utf-8-sig", "", None)
    header = read_header(path, fmt, Limits())
    assert (header.names, header.data_start, header.data_line) == ([], 3, 1)
    assert [r.cells for r in read_all(path, fmt)] == [{"a": "é"}]


def test_utf16_kv_lines_are_decoded(tmp_path: Path) -> None:
    path = write(tmp_path, '\ufeffname="Zoë K"\r\nx=1\r\n'.encode("utf-16-le"))
    fmt = FileFormat("kv", "utf-16", "", None)
    assert [r.cells for r in read_all(path, fmt)] == [{"name": "Zoë K"}, {"x": "1"}]


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_an_empty_kv_file_is_rejected(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)
    with pytest.raises(FileRejected, match="the file is empty"):
        read_header(path, KV, Limits())


def test_a_comment_only_file_has_no_records(tmp_path: Path) -> None:
    path = write(tmp_path, b"# nothing today\n")
    assert read_all(path) == []


def test_invalid_bytes_fail_the_file_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"a=1\nb=\xff\n")
    with pytest.raises(FileRejected, match="not valid utf-8") as err:
        read_all(path)
    assert err.value.line == 2


def test_a_value_over_the_field_limit_fails_naming_max_field_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, b"a=1\nb=" + b"x" * 9 + b"\n")
    with pytest.raises(LimitExceeded, match="^line 2: a field is longer than the max_field_bytes limit"):
        read_all(path, limits=Limits(max_field_bytes=8))


def test_a_line_over_the_record_limit_fails_naming_max_record_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, b"a=1\nb=" + b"x" * 100 + b"\n")
    with pytest.raises(LimitExceeded, match="max_record_bytes") as err:
        read_all(path, limits=Limits(max_record_bytes=50))
    assert err.value.line == 2


def test_resuming_at_each_record_end_gives_the_same_records_as_one_pass(tmp_path: Path) -> None:
    path = write(tmp_path, b'# head\na=1\n\nb="x y"\nbad\n# mid\nc=3 d=4\ne=5')
    header = read_header(path, KV, Limits())
    whole = read_all(path)
    assert len(whole) == 5
    for k, record in enumerate(whole):
        rest = iter_records(path, KV, header, Limits(), start=record.end, first_row=k + 2, first_line=record.next_line)
        assert list(rest) == whole[k + 1 :]


def test_max_records_stops_before_reading_the_next_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"a=1\nb=\xff\n")
    header = read_header(path, KV, Limits())
    assert [r.cells for r in iter_records(path, KV, header, Limits(), max_records=1)] == [{"a": "1"}]


@settings(max_examples=500, deadline=None)
@given(
    line=st.text(alphabet=st.sampled_from(list('ab=="\\ \t\r\n#é\xa0\x0c\x1f\u2028\u200b\x00')), max_size=30)
    | st.text(max_size=20)
)
def test_the_fast_path_splits_a_line_exactly_as_the_pair_by_pair_parse(line: str) -> None:
    assert parse_line(line) == _parse_pairs(line.strip(" \t\r\n"))
