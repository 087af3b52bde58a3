"""JSON Lines reading (SPEC 18): objects as keyed records, JSON values kept, bad lines as bad rows, limits."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import pytest

from service.errors import FileRejected, LimitExceeded
from service.formats import FileFormat, Limits, Record, detect_format, iter_records, read_header, scan_chunks
from service.formats.jsonl import MAX_DEPTH, RAW_KEY
from service.schema.products import ProductRegistry
from service.stages.validate import check_records, reject_line
from service.storage import rejects

JSONL = FileFormat("jsonl", "utf-8", "", None)
DEFAULTS = Limits()
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def write(tmp_path: Path, data: bytes, name: str = "input.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all(path: Path, limits: Limits = DEFAULTS) -> list[Record]:
    return list(iter_records(path, JSONL, read_header(path, JSONL, limits), limits))


def lines(*objects: Any) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objects)


@pytest.mark.parametrize(("name", "option"), [("a.jsonl", None), ("a.NDJSON", None), ("a.csv", "jsonl")])
def test_the_extension_or_the_option_names_json_lines(tmp_path: Path, name: str, option: str | None) -> None:
    path = write(tmp_path, b'{"a": 1}\n', name)
    assert detect_format(path, {"format": option} if option else {}) == JSONL


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b'\n{"id": "U-1", "email": "a@example.com"}\n', "jsonl"),
        (b'{"a": 1}\n', "jsonl"),
        (b'{"a": 1\n', "csv"),  # not one JSON object: not sniffed as JSON Lines
        (b"[1, 2]\n", "csv"),
        (b'{a,"b"}\n1,2\n', "csv"),
        (b"a={1}\n", "kv"),
    ],
)
def test_a_first_line_that_is_one_json_object_is_sniffed_as_json_lines(tmp_path: Path, data: bytes, kind: str) -> None:
    assert detect_format(write(tmp_path, data, "upload.dat"), {}).kind == kind


@pytest.mark.parametrize("bom", [codecs.BOM_UTF16_LE, b""])
def test_json_lines_in_another_encoding_than_utf8_is_refused(tmp_path: Path, bom: bytes) -> None:
    path = write(tmp_path, bom + '{"a": 1}\n'.encode("utf-16-le" if bom else "utf-8"), "a.jsonl")
    options = {} if bom else {"encoding": "latin-1"}
    with pytest.raises(FileRejected, match="must be UTF-8"):
        detect_format(path, options)


def test_a_bom_is_skipped_and_each_object_is_a_record_with_its_json_values(tmp_path: Path) -> None:
    path = write(
        tmp_path, codecs.BOM_UTF8 + lines({"a": "x", "n": 42, "f": 1.5, "b": True, "z": None, "l": [1, {"k": "v"}]})
    )
    fmt = detect_format(path, {})
    assert fmt.encoding == "utf-8-sig"
    header = read_header(path, fmt, DEFAULTS)
    assert (header.names, header.data_start, header.data_line) == ([], 3, 1)
    (record,) = iter_records(path, fmt, header, DEFAULTS)
    assert record.cells == {"a": "x", "n": 42, "f": 1.5, "b": True, "z": None, "l": [1, {"k": "v"}]}
    assert (record.source_row, record.line, record.error, record.end) == (1, 1, None, path.stat().st_size)


def test_blank_lines_are_skipped_without_using_a_source_row(tmp_path: Path) -> None:
    path = write(tmp_path, b'\n  \r\n{"a": 1}\n\n\t\n{"a": 2}\n')
    assert [(r.source_row, r.line, r.cells) for r in read_all(path)] == [(1, 3, {"a": 1}), (2, 6, {"a": 2})]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"a": 1', "line 2: not valid JSON: Expecting ',' delimiter at the end of the line"),
        (b"not json", "line 2: not valid JSON: Expecting value at character 1"),
        (b'{"a": 1} {"b": 2}', "line 2: not valid JSON: Extra data after the value at character 10"),
        (b"[1, 2]", "line 2: the line is a JSON array, not an object"),
        (b'"text"', "line 2: the line is a JSON string, not an object"),
        (b"  42  ", "line 2: the line is a JSON number, not an object"),
        (b"null", "line 2: the line is a JSON null, not an object"),
        (b'{"a": NaN}', "line 2: not valid JSON: NaN is not a JSON value"),
        (b'{"a": 1e999}', "line 2: not valid JSON: the number 1e999 is out of range"),
        (b'{"a": ' + b"1" * 5000 + b"}", "line 2: not valid JSON: a number has too many digits"),
        (b'{"a": "\\u0000"}', "line 2: a JSON string holds \\u0000 (a NUL character), which cannot be stored"),
        (b'{"\\ud800": 1}', "line 2: a JSON string holds a lone UTF-16 surrogate"),
        (
            b'{"a": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}",
            f"line 2: the JSON is nested more than {MAX_DEPTH} levels",
        ),
        (
            b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            f"line 2: the JSON is nested more than {MAX_DEPTH} levels",
        ),
    ],
)
def test_a_line_that_is_not_a_json_object_is_a_bad_record_keeping_its_raw_text_and_reading_goes_on(
    tmp_path: Path, line: bytes, message: str
) -> None:
    path = write(tmp_path, b'{"a": "before"}\n' + line + b'\r\n{"a": "after"}\n')
    first, bad, after = read_all(path)
    assert (first.cells, first.error) == ({"a": "before"}, None)
    assert bad.error is not None and bad.error.startswith(message), bad.error
    assert bad.cells == {RAW_KEY: line.decode()}
    assert (bad.source_row, bad.line, bad.next_line) == (2, 2, 3)
    assert (after.source_row, after.cells, after.error) == (3, {"a": "after"}, None)


def test_nesting_up_to_the_limit_and_escaped_text_are_kept(tmp_path: Path) -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    path = write(tmp_path, lines({"a": deep}, b'{"b": "caf\\u00e9 \\ud83d\\ude00 \\ud55c"}'))
    first, second = read_all(path)
    assert (first.cells, first.error) == ({"a": deep}, None)
    assert (second.cells, second.error) == ({"b": "café 😀 한"}, None)


def test_an_empty_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileRejected, match="the file is empty"):
        read_header(write(tmp_path, b"\n  \n"), JSONL, DEFAULTS)


def test_a_string_value_over_the_field_limit_fails_naming_max_field_bytes(tmp_path: Path) -> None:
    limits = Limits(max_field_bytes=40)
    path = write(tmp_path, lines({"a": "é" * 20}, {"a": "é" * 21}))  # 40 then 42 bytes of UTF-8
    with pytest.raises(LimitExceeded, match="max_field_bytes") as caught:
        read_all(path, limits)
    assert caught.value.line == 2


def test_a_nested_value_counts_its_json_text_against_the_field_limit(tmp_path: Path) -> None:
    limits = Limits(max_field_bytes=40)
    path = write(tmp_path, lines({"a": list(range(5))}, {"a": list(range(30))}))
    with pytest.raises(LimitExceeded, match="max_field_bytes") as caught:
        list(scan_chunks(path, JSONL, read_header(path, JSONL, limits), limits, 10, 10**6))
    assert caught.value.line == 2


def test_a_line_over_the_record_limit_fails_naming_max_record_bytes(tmp_path: Path) -> None:
    limits = Limits(max_record_bytes=50)
    path = write(tmp_path, lines({"a": 1}, {"a": "x" * 60}))
    with pytest.raises(LimitExceeded, match="max_record_bytes") as caught:
        read_all(path, limits)
    assert caught.value.line == 2


def test_more_distinct_keys_than_max_columns_fail_naming_the_limit(tmp_path: Path) -> None:
    limits = Limits(max_columns=3)
    path = write(tmp_path, lines({"a": 1, "b": 2}, {"a": 1, "c": 3}, {"d": 4}))
    with pytest.raises(LimitExceeded, match="max_columns") as caught:
        read_all(path, limits)
    assert caught.value.line == 3


def test_a_file_over_the_text_limit_is_refused_by_the_scan(tmp_path: Path) -> None:
    limits = Limits(max_text_bytes=20)
    path = write(tmp_path, lines({"a": 1}, {"a": 2}, {"a": 3}))
    with pytest.raises(LimitExceeded, match="max_text_bytes"):
        list(scan_chunks(path, JSONL, read_header(path, JSONL, limits), limits, 10, 10**6))


def test_the_chunks_resume_at_their_byte_offsets_and_give_the_records_of_one_pass(tmp_path: Path) -> None:
    objects = [{"id": f"U-{i}", "n": i, **({"extra": True} if i % 10 == 1 else {})} for i in range(1, 24)]
    data = codecs.BOM_UTF8 + lines(*objects[:5]) + b"\n[broken\n" + lines(*objects[5:])
    path = write(tmp_path, data)
    header = read_header(path, JSONL, DEFAULTS)
    whole = list(iter_records(path, JSONL, header, DEFAULTS))
    cuts = list(scan_chunks(path, JSONL, header, DEFAULTS, 5, 10**6))
    assert [cut.rows for cut in cuts] == [5, 5, 5, 5, 4]
    assert cuts[1].keys == {"id", "n"}  # the broken line gives no key
    assert cuts[0].keys == {"id", "n", "extra"}
    read_back = []
    for cut in cuts:
        assert cut.start == 3 or data[cut.start - 1 : cut.start] == b"\n"
        chunk = list(
            iter_records(
                path, JSONL, header, DEFAULTS, start=cut.start, first_row=cut.first_row,
                first_line=cut.first_line, max_records=cut.rows,
            )
        )  # fmt: skip
        assert len(chunk) == cut.rows
        read_back += chunk
    assert [(r.source_row, r.line, r.end, r.cells, r.error) for r in read_back] == [
        (r.source_row, r.line, r.end, r.cells, r.error) for r in whole
    ]
    assert whole[5].cells == {RAW_KEY: "[broken"} and whole[5].line == 7


def test_keys_map_like_header_names_and_json_values_go_to_the_schema_as_they_are(tmp_path: Path) -> None:
    users = ProductRegistry.load(SCHEMAS).get("users")
    path = write(
        tmp_path,
        lines(
            {"ID": "U-1", "E-Mail": " ann@example.com ", "age": 34, "active": True, "first_name": None},
            {"external_id": "U-2", "email": "bob@example.com", "age": "41", "active": "yes", "unknown": [1]},
            {"external_id": "U-3", "email": "c@example.com", "age": 42.0},
            {"external_id": 4, "email": "d@example.com", "age": 1.5, "active": 1, "last_name": {"a": 1}},
            {"external_id": "U-5", "email": "e@example.com", "age": True, "first_name": ["Ann"]},
        ),
    )
    results = list(check_records(users, [], iter(read_all(path))))
    assert [json.loads(data) if data else None for _, data, _ in results[:3]] == [
        {"external_id": "U-1", "email": "ann@example.com", "age": 34, "active": True},
        {"external_id": "U-2", "email": "bob@example.com", "age": 41, "active": True},
        {"external_id": "U-3", "email": "c@example.com", "age": 42},
    ]
    assert results[2][1] == '{"external_id": "U-3", "email": "c@example.com", "age": 42}'
    assert [e.message for e in results[3][2]] == [
        "external_id: expected a string, got the JSON number 4",
        "last_name: expected a string, got a JSON object",
        "age: expected an integer, got the JSON number 1.5",
        "active: expected true or false, got the JSON number 1",
    ]
    assert [e.message for e in results[4][2]] == [
        "first_name: expected a string, got a JSON array",
        "age: expected an integer, got JSON true",
    ]


def test_a_rejected_object_is_stored_with_its_json_values_and_rejects_csv_writes_them_as_json(tmp_path: Path) -> None:
    users = ProductRegistry.load(SCHEMAS).get("users")
    path = write(
        tmp_path,
        lines({"id": "U-1", "email": "bad", "age": 3, "tags": [1, "x"], "ok": None}, b'{"id": "U-2", oops', {"n": "1"}),
    )
    stored = []
    for record, data, errors in check_records(users, [], iter(read_all(path))):
        assert data is None
        line = reject_line("job", record, errors).decode().rstrip("\n").split("\t")
        stored.append(rejects.Reject(int(line[1]), json.loads(line[2].replace("\\\\", "\\")), json.loads(line[3])))
    assert stored[0].cells == {"id": "U-1", "email": "bad", "age": 3, "tags": [1, "x"], "ok": None}
    assert stored[1].cells == {RAW_KEY: '{"id": "U-2", oops'}
    names = rejects.header_names({"format": {"kind": "jsonl"}, "header": {"names": []}})
    assert names is None
    text = b"".join(rejects.csv_bytes(lambda: iter(stored), names)).decode()
    assert text.splitlines()[:3] == [
        "id,email,age,tags,ok,_line,n,errors",
        'U-1,bad,3,"[1, ""x""]",null,,,email: \'bad\' is not a valid email address',
        ',,,,,"{""id"": ""U-2"", oops",,line 2: not valid JSON: Expecting property name enclosed in double '
        "quotes at character 15",
    ]
    assert rejects.record(stored[0], names) == {
        "id": "U-1",
        "email": "bad",
        "age": "3",
        "tags": '[1, "x"]',
        "ok": "null",
    }


def test_a_replayed_reject_is_checked_again_with_the_same_json_values(tmp_path: Path) -> None:
    users = ProductRegistry.load(SCHEMAS).get("users")
    cells = {"id": "U-1", "email": "ann@example.com", "age": 34, "active": 1}
    replayed = Record(7, 7, 0, json.loads(json.dumps(cells)))
    ((_, data, errors),) = check_records(users, [], iter([replayed]))
    assert data is None
    assert [e.message for e in errors] == ["active: expected true or false, got the JSON number 1"]
