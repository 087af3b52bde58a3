"""JSON Lines read a batch of lines at a time (orjson per line, checks per batch): the same records,
keys, cuts and refusals as the careful reading of each line alone.

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
        data = data[:at] + draw(st.sampled_from(DAMAGE)) + data[at:]
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
