"""JSON Lines read a batch of lines at a time (orjson per line, on the lines' own bytes, checks per
batch): the same records, keys, cuts and refusals as the careful reading of each line alone.

The reference reads the file line by line with LineReader and judges every line with parse_line's
careful path only (the json module, no orjson), so the batches' fast paths are checked against the
rules, not against themselves.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.formats import FileFormat, Header, Limits, Record, iter_records, jsonl, read_header, scan_chunks, text
from service.formats.limits import DistinctKeys
from tests.unit.test_formats_scan import (
    BLOCKS,
    CHUNK_BYTES,
    CHUNK_ROWS,
    DAMAGE,
    SETTINGS,
    block_bytes,
    expected_cuts,
    outcome,
)

JSONL = FileFormat("jsonl", "utf-8", "", None)
DEFAULTS = Limits()


def careful_records(path: Path, limits: Limits) -> Iterator[Record]:
    """iter_records as the rules say it: each line alone, judged by parse_line without orjson
    (consume it whole before reading otherwise)."""
    saved = jsonl._fast
    jsonl._fast = lambda text: None  # parse_line's careful path for every line
    try:
        yield from _careful(path, limits)
    finally:
        jsonl._fast = saved


def _careful(path: Path, limits: Limits) -> Iterator[Record]:
    header = read_header(path, JSONL, limits)
    with path.open("rb") as fh:
        codec = text.text_codec(fh, "utf-8")
        lines = text.LineReader(fh, codec, limits.max_record_bytes, header.data_start, header.data_line)
        distinct = DistinctKeys(limits, "utf-8", "a JSON Lines file")
        row = 1
        for line in lines:
            lines.mark()
            if not line.strip(" \t\r\n"):
                continue
            cells, error = jsonl.parse_line(line)
            if cells is None:
                raw = {jsonl.RAW_KEY: line.rstrip("\r\n")}
                yield Record(row, lines.line, lines.pos, raw, f"line {lines.line}: {error}", lines.next_line)
            else:
                if len(line) > limits.max_field_bytes // 4:
                    jsonl._check_fields(cells, limits.max_field_bytes, lines.line)
                distinct.add(cells, lines.line)
                yield Record(row, lines.line, lines.pos, cells, None, lines.next_line)
            row += 1


def check_scan(path: Path, header: Header, limits: Limits, chunk_rows: int, chunk_bytes: int) -> None:
    """scan_chunks agrees with one full pass (a bad line gives no key), and each cut reads back as its records."""
    whole, refusal = outcome(lambda: iter_records(path, JSONL, header, limits))
    cuts, scan_refusal = outcome(lambda: scan_chunks(path, JSONL, header, limits, chunk_rows, chunk_bytes))
    assert scan_refusal == refusal
    keyed = [dataclasses.replace(record, cells=[]) if record.error else record for record in whole]
    assert cuts == expected_cuts(keyed, header, chunk_rows, chunk_bytes, True, refusal is None)
    read_back: list[Record] = []
    for cut in cuts:
        chunk = list(
            iter_records(
                path, JSONL, header, limits, start=cut.start, first_row=cut.first_row,
                first_line=cut.first_line, max_records=cut.rows,
            )
        )  # fmt: skip
        assert len(chunk) == cut.rows
        read_back += chunk
    assert read_back == (whole if refusal is None else whole[: len(read_back)])


# ---------------------------------------------------------------- generated files

KEYS = st.sampled_from(["id", "email", "é", "k", 'q"', "a\\b", "{", "["])
STRINGS = st.text(alphabet='ab é山{}[]":,\\\t\u2028', max_size=6)
BIG = [2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**30, 2**63 - 1, -(2**63)]
NUMBERS = st.one_of(st.integers(-5, 5), st.sampled_from(BIG), st.sampled_from([1.5, -0.0, 1e19, 1.0e300]))
SCALARS = st.one_of(STRINGS, NUMBERS, st.booleans(), st.none())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(KEYS, inner, max_size=2))
# Bytes Python's UTF-8 codec refuses, each for another reason: a surrogate, overlong forms, past
# U+10FFFF, a cut sequence, a lone continuation byte, a five-byte form, bytes never in UTF-8.
NOT_UTF8 = [
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xf4\x90\x80\x80",
    b"\xe5\xb1",
    b"\xf0\x9f\x98",
    b"\x80",
    b"\xbf",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
]
# Lines the fast paths must send the careful way, or refuse as the careful way does.
ODD = [
    "",
    "  ",
    "\t",
    "null",
    "42",
    '"text"',
    "[1]",
    '["id"]',
    "{}",
    ' {"id": "lead"}',
    '\ufeff{"id": "x"}',
    '{"id": "x"',
    '{"id": "x"} {"id": "y"}',
    '{"id": "x", "id": 18446744073709551617}',
    '{"id": 1, "id": "y"}',
    '{"id": NaN}',
    '{"id": 1e999}',
    '{"id": "\\u0000"}',
    '{"\\u0000": "x"}',
    '{"id": "\\ud800"}',
    '{"id": "caf\\u00e9"}',
    '{"id": "a\\"b\\\\c\\n"}',
    '{"id": ' + "[" * 65 + "]" * 65 + "}",
    '{"id": ' + "[" * 64 + "]" * 64 + "}",
    '{"id": "' + "{" * 70 + '"}',
]


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines = []
    for kind in draw(st.lists(st.sampled_from(["strings", "strings", "strings", "values", "odd"]), max_size=14)):
        if kind == "strings":
            obj: Any = draw(st.dictionaries(KEYS, STRINGS, max_size=3))
        elif kind == "values":
            obj = draw(st.dictionaries(KEYS, VALUES, max_size=3))
        else:
            lines.append(draw(st.sampled_from(ODD)))
            continue
        compact = draw(st.booleans())
        lines.append(json.dumps(obj, ensure_ascii=draw(st.booleans()), separators=(",", ":") if compact else None))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    body = "".join(line + newline for line in lines)
    if draw(st.booleans()):
        body = body.rstrip("\r\n")  # no newline at the end
    data = body.encode("utf-8-sig" if draw(st.booleans()) else "utf-8")
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(DAMAGE + NOT_UTF8)) + data[at:]
    return data


LIMITS = st.builds(
    Limits,
    max_field_bytes=st.sampled_from([8, 40, 1024**2, 1024**2]),
    max_record_bytes=st.sampled_from([30, 200, 10 * 1024**2, 10 * 1024**2]),
    max_columns=st.sampled_from([3, 16_384, 16_384]),
)


@SETTINGS
@given(data=jsonl_files(), limits=LIMITS, block=BLOCKS, chunk_rows=CHUNK_ROWS, chunk_bytes=CHUNK_BYTES)
def test_batches_give_the_records_keys_and_cuts_of_the_careful_reading(
    data: bytes, limits: Limits, block: int, chunk_rows: int, chunk_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as folder, block_bytes(block):
        path = Path(folder) / "input.jsonl"
        path.write_bytes(data)
        header, refusal = outcome(lambda: [read_header(path, JSONL, limits)])
        if refusal is not None:
            return
        whole = outcome(lambda: iter_records(path, JSONL, header[0], limits))
        assert whole == outcome(lambda: careful_records(path, limits))
        check_scan(path, header[0], limits, chunk_rows, chunk_bytes)


# ---------------------------------------------------------------- one line among flat ones

FLAT = '{"id": "u%d", "email": "u%d@example.com", "name": "Zoë"}'


@pytest.mark.parametrize(
    "line",
    [
        '{"id": "u0", "email": 18446744073709551617}',  # an integer orjson reads as a float
        '{"id": "u0", "email": 9223372036854775808}',  # orjson's exact, past int64
        '{"id": "u0", "email": 1e19}',
        '{"id": "u0", "email": "caf\\u00e9"}',  # a \u escape
        '{"id": "u0", "email": "\\u0000"}',
        '{"id": "u0", "email": {"nested": "x"}}',
        '{"id": "u0", "email": ["x"]}',
        '{"id": "u0", "email": "{[x]}"}',  # brackets in a string
        '["id", "email"]',  # not an object: the keys it names are not keys
        '"id"',
        "null",
        "",
        '{"id": "u0", "id": "again"}',  # a duplicate key: the last value
        '{"id": "u0", "id": 18446744073709551617}',
        '{"id": NaN}',
        ' {"id": "leading blank"}',
        '{"id": "u0", "email": "x"',
        '{"zz": "a key the other lines lack"}',
    ],
)
@pytest.mark.parametrize("block", [64, 4096, 256 * 1024])
def test_one_odd_line_among_flat_ones_reads_as_it_reads_alone(tmp_path: Path, line: str, block: int) -> None:
    flat = [FLAT % (i, i) for i in range(1, 200)]
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(flat[:100] + [line] + flat[100:]) + "\n", encoding="utf-8")
    with block_bytes(block):
        header = read_header(path, JSONL, DEFAULTS)
        assert list(iter_records(path, JSONL, header, DEFAULTS)) == list(careful_records(path, DEFAULTS))
        check_scan(path, header, DEFAULTS, 7, 10**9)
        check_scan(path, header, DEFAULTS, 10**9, 10**9)


@pytest.mark.parametrize("block", [16, 4096])
def test_a_long_field_after_short_ones_with_the_same_keys_is_refused_at_its_line(tmp_path: Path, block: int) -> None:
    path = tmp_path / "input.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "' + "é" * 20 + '"}\n{"id": "c"}\n', encoding="utf-8")
    limits = Limits(max_field_bytes=16)
    with block_bytes(block):
        header = read_header(path, JSONL, limits)
        _, refusal = outcome(lambda: scan_chunks(path, JSONL, header, limits, 10, 10**9))
        assert refusal is not None and "max_field_bytes" in refusal[1] and refusal[2] == 3
        assert outcome(lambda: iter_records(path, JSONL, header, limits)) == outcome(
            lambda: careful_records(path, limits)
        )
        check_scan(path, header, limits, 10, 10**9)


# ---------------------------------------------------------------- lines that are not UTF-8

# Where a line's bad bytes may sit: each %s is replaced by them.
NOT_UTF8_LINES = [
    '{"id": "u0", "email": "%s"}',  # in a flat line's string
    '{"id": "u0", "%s": "x"}',  # in a key
    '{"id": "u0", "email": "x"} %s',  # after the object
    '%s{"id": "u0"}',  # before it
    "  %s  ",  # on a line otherwise blank
    '"%s"',  # in a line that is not an object
    '{"id": "u0", "email": "x%s"',  # in a line that is not valid JSON
    '{"id": "caf\\u00e9 %s"}',  # in a line with a \\u escape (read the careful way)
    '{"id": {"nested": "%s"}}',  # in a nested value
    '{"id": 18446744073709551617, "email": "%s"}',  # beside an integer orjson cannot hold
]


@pytest.mark.parametrize("bad", NOT_UTF8)
@pytest.mark.parametrize("line", NOT_UTF8_LINES)
@pytest.mark.parametrize("block", [64, 256 * 1024])
def test_a_line_that_is_not_utf8_among_flat_ones_is_refused_as_the_careful_reading_refuses_it(
    tmp_path: Path, bad: bytes, line: str, block: int
) -> None:
    flat = [(FLAT % (i, i)).encode() for i in range(1, 200)]
    path = tmp_path / "input.jsonl"
    head, _, tail = line.encode().partition(b"%s")
    path.write_bytes(b"\n".join(flat[:100] + [head + bad + tail] + flat[100:]) + b"\n")
    with block_bytes(block):
        header = read_header(path, JSONL, DEFAULTS)
        whole, refusal = outcome(lambda: iter_records(path, JSONL, header, DEFAULTS))
        assert (whole, refusal) == outcome(lambda: careful_records(path, DEFAULTS))
        assert refusal is not None and refusal[2] == 101 and "not valid utf-8 text" in refusal[1], refusal
        assert f"byte 0x{bad[0]:02x} at byte {len(head) + 1} of the line" in refusal[1]
        assert len(whole) == 100
        check_scan(path, header, DEFAULTS, 7, 10**9)


def test_orjson_refuses_every_sequence_of_up_to_two_bytes_that_is_not_utf8() -> None:
    # JSON Lines trusts orjson to refuse a line that is not UTF-8 (it checks its input whole
    # first, as strictly as Python's codec): a line it reads is never decoded by Python.
    sequences = [bytes([a]) for a in range(256)] + [bytes([a, b]) for a in range(0x80, 256) for b in range(256)]
    accepted = []
    for seq in sequences + NOT_UTF8:
        for data in (b'{"k": "' + seq + b'"}', b'{"k": "v"} ' + seq, b'{"' + seq + b'": 1}'):
            if _orjson_reads(data) and not _utf8(data):
                accepted.append(data)
    assert accepted == []


@given(st.binary(max_size=12), st.sampled_from([b'{"k": "%s"}', b'{"%s": "v"}', b'{"k": "v"}%s', b"%s"]))
def test_orjson_reads_no_bytes_that_python_cannot_decode(seq: bytes, wrap: bytes) -> None:
    data = wrap.replace(b"%s", seq)
    assert _utf8(data) or not _orjson_reads(data)


def _orjson_reads(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_file_read_in_another_codec_gives_the_records_of_its_utf8_twin(tmp_path: Path, encoding: str) -> None:
    # detect_format refuses such a file (JSON text is UTF-8); read directly, it takes the decoded
    # lines' way (utf8_lines encodes them again), with positions in its own codec's terms.
    body = "".join(FLAT % (i, i) + "\n" for i in range(1, 40)).replace("Zoë", "Zoë é")
    body += '{"id": "bad"\n\n{"id": "last"}\n'
    twin, other = tmp_path / "twin.jsonl", tmp_path / "other.jsonl"
    twin.write_text(body, encoding="utf-8")
    other.write_text(body, encoding=encoding)
    fmt = dataclasses.replace(JSONL, encoding=encoding)
    header = read_header(other, fmt, DEFAULTS)
    got = list(iter_records(other, fmt, header, DEFAULTS))
    expected = list(iter_records(twin, JSONL, read_header(twin, JSONL, DEFAULTS), DEFAULTS))
    assert [(r.source_row, r.line, r.cells, r.error) for r in got] == [
        (r.source_row, r.line, r.cells, r.error) for r in expected
    ]
    assert len(got) == 41 and got[-2].error is not None and got[-1].cells == {"id": "last"}
    cuts = list(scan_chunks(other, fmt, header, DEFAULTS, 7, 10**9))
    assert sum(cut.rows for cut in cuts) == 41
