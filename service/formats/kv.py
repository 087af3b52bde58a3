"""key=value lines (logfmt): one record per line; a bad line is a bad row, not a bad file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from service.errors import FileRejected, LimitExceeded
from service.formats.text import FileFormat, Header, Limits, Record, limit_text, open_lines

# A key is anything but blanks, '=' and '"'; a value is quoted (with \" and \\ escapes)
# or bare; a pair ends at a run of blanks or at the end of the line.
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_PAIR = re.compile(r'([^\s="]+)=(?:' + _QUOTED + r'|([^\s"]*))(?:[ \t]+|$)')
_CLOSED = re.compile(_QUOTED)
_ESCAPE = re.compile(r'\\(["\\])')


def parse_line(text: str) -> tuple[dict[str, str], str | None]:
    """Split one line into its pairs; on a syntax error return the pairs before it and what is wrong."""
    text = text.strip(" \t\r\n")
    cells: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        pair = _PAIR.match(text, pos)
        if pair is None:
            return cells, _diagnose(text, pos)
        key, quoted, bare = pair.groups()
        if key in cells:
            return cells, f"the key {key!r} appears twice"
        cells[key] = bare if quoted is None else _ESCAPE.sub(r"\1", quoted)
        pos = pair.end()
    return cells, None


def _diagnose(text: str, pos: int) -> str:
    """Say why no key=value pair starts at pos."""
    token = re.split(r"[ \t]", text[pos:], maxsplit=1)[0]
    key, equals, value = token.partition("=")
    if not equals:
        return f"{_clip(token)!r} is not a key=value pair"
    if not key:
        return f"{_clip(token)!r} has an empty key"
    if '"' in key:
        return f"the key {_clip(key)!r} contains a '\"'"
    if value.startswith('"'):
        if _CLOSED.match(text, pos + len(key) + 1) is None:
            return f"the quoted value of {key!r} is not closed"
        return f"the quoted value of {key!r} is followed by text; put a blank between pairs"
    return f"the value of {key!r} contains a '\"'; quote the value and escape it as \\\""


def _clip(text: str, size: int = 40) -> str:
    return text if len(text) <= size else text[:size] + "..."


def looks_like_kv(line: str) -> bool:
    """Tell whether a line is made only of key=value pairs (for content sniffing)."""
    cells, error = parse_line(line.strip())
    return error is None and bool(cells)


def read_header(fh: BinaryIO, fmt: FileFormat, limits: Limits) -> Header:
    """Check the file has content; kv keys come per record, so the header has no names."""
    lines = open_lines(fh, fmt.encoding, limits)
    start = lines.pos
    for text in lines:
        lines.mark()
        if text.strip():
            return Header(names=[], data_start=start, data_line=1)
    raise FileRejected("the file is empty: it has no key=value line")


def iter_records(
    fh: BinaryIO,
    fmt: FileFormat,
    header: Header,
    limits: Limits,
    start: int | None,
    first_row: int,
    first_line: int | None,
    max_records: int | None,
) -> Iterator[Record]:
    """Yield one record per non-blank, non-comment line from start (default: the top)."""
    lines = open_lines(fh, fmt.encoding, limits, header=header, start=start, line=first_line)
    row = first_row
    if max_records is not None and max_records <= 0:
        return
    for text in lines:
        lines.mark()  # each line is a record of its own for the size limit
        body = text.strip()
        if not body or body.startswith("#"):
            continue
        cells, error = parse_line(body)
        if len(body) > limits.max_field_bytes // 4:
            _check_fields(cells, lines.codec.name, limits.max_field_bytes, lines.line)
        message = None if error is None else f"line {lines.line}: {error}"
        yield Record(row, lines.line, lines.pos, cells, message, next_line=lines.next_line)
        # Stop without reading ahead: the next line belongs to whoever resumes here.
        if max_records is not None and row - first_row + 1 >= max_records:
            return
        row += 1


def _check_fields(cells: dict[str, str], encoding: str, max_field_bytes: int, line: int) -> None:
    """Refuse a line with a key or value over the field limit, measured in the file's bytes."""
    for key, value in cells.items():
        for text in (key, value):
            if len(text.encode(encoding)) > max_field_bytes:
                raise LimitExceeded(limit_text("a field", "max_field_bytes", max_field_bytes), line=line)
