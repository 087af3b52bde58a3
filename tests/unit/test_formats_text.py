"""BlockSource.raw_lines and utf8_lines: a UTF-8 file's lines as their own bytes, with every check
lines() makes (NUL, sizes, at the same lines), positions as lines() gives them, and the decoding
left to the consumer, whose utf8_text refuses an undecodable line as lines() refuses it."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import FileRejected
from service.formats import Limits, text
from tests.unit.test_formats_scan import BLOCKS, SETTINGS, block_bytes

Step = tuple[Any, int]  # a line as the consumer takes it, and the position just after it


def through_lines(data: bytes, limits: Limits) -> Iterator[Step]:
    source = text.open_source(io.BytesIO(data), "utf-8", limits, per_line=True)
    line = source.mark
    for piece in source.lines():
        yield piece, source.ends[line - source.base]
        line += 1


def through_raw_lines(data: bytes, limits: Limits) -> Iterator[Step]:
    """raw_lines as a consumer must take them: each line decoded (utf8_text) before the next."""
    source = text.open_source(io.BytesIO(data), "utf-8", limits, per_line=True)
    line = source.mark
    for piece in text.utf8_lines(source):
        assert isinstance(piece, bytes)
        yield text.utf8_text(source, piece, line), source.ends[line - source.base]
        line += 1


def outcome(produce: Callable[[], Iterator[Step]]) -> tuple[list[Step], tuple[str, str, int | None] | None]:
    steps: list[Step] = []
    try:
        for step in produce():
            steps.append(step)
    except FileRejected as exc:
        return steps, (type(exc).__name__, str(exc), exc.line)
    return steps, None


PIECES = st.sampled_from(
    [
        b"\n",
        b"\r\n",
        b"\r",
        b" ",
        b"a",
        b'{"k": "v"}',
        b"\xc3\xa9",
        b"\xe5\xb1\xb1",
        b"\0",
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",
    ]
) | st.binary(max_size=3)
FILES = st.lists(PIECES, max_size=40).map(b"".join)
LIMITS = st.builds(
    Limits,
    max_field_bytes=st.sampled_from([4, 40, 1024**2]),
    max_record_bytes=st.sampled_from([6, 30, 10 * 1024**2]),
)


@SETTINGS
@given(data=FILES, bom=st.booleans(), limits=LIMITS, block=BLOCKS)
def test_raw_lines_decoded_by_the_consumer_give_the_lines_positions_and_refusals_of_lines(
    data: bytes, bom: bool, limits: Limits, block: int
) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + data
    with block_bytes(block):
        assert outcome(lambda: through_raw_lines(data, limits)) == outcome(lambda: through_lines(data, limits))


@pytest.mark.parametrize("block", [4, 64 * 1024])
def test_raw_lines_hand_over_an_undecodable_line_that_lines_refuses(block: int) -> None:
    data = b'{"a": 1}\n{"b": "\xff"}\n{"c": 3}\n'
    with block_bytes(block):
        source = text.open_source(io.BytesIO(data), "utf-8", Limits(), per_line=True)
        assert isinstance(source, text.BlockSource)
        assert list(source.raw_lines()) == [b'{"a": 1}\n', b'{"b": "\xff"}\n', b'{"c": 3}\n']
        with pytest.raises(FileRejected) as refused:
            text.utf8_text(source, b'{"b": "\xff"}\n', 2)
    assert refused.value.line == 2
    assert "not valid utf-8 text: byte 0xff at byte 8 of the line" in str(refused.value)


def test_raw_lines_still_refuse_a_nul_at_its_line() -> None:
    source = text.open_source(io.BytesIO(b"a\nb\0\nc\n"), "utf-8", Limits(), per_line=True)
    lines = text.utf8_lines(source)
    assert next(lines) == b"a\n"
    with pytest.raises(FileRejected, match="NUL") as refused:
        next(lines)
    assert refused.value.line == 2


def test_raw_lines_are_a_utf8_files_only() -> None:
    source = text.open_source(io.BytesIO(b"caf\xe9\n"), "latin-1", Limits(), per_line=True)
    assert isinstance(source, text.BlockSource)
    with pytest.raises(ValueError, match="UTF-8"):
        source.raw_lines()


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-16"])
def test_utf8_lines_of_another_codec_are_its_decoded_lines_in_utf8(encoding: str) -> None:
    body = "café\r\nnaïve\n\nend"
    source = text.open_source(io.BytesIO(body.encode(encoding)), encoding, Limits(), per_line=True)
    assert list(text.utf8_lines(source)) == [line.encode() for line in body.splitlines(keepends=True)]
