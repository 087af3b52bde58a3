"""key=value lines (logfmt): one record per line; a bad line is a bad row, not a bad file."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from operator import itemgetter
from typing import BinaryIO

from service.errors import FileRejected, LimitExceeded
from service.formats.limits import DistinctKeys, Limits, clip, limit_text
from service.formats.records import Cut, FileFormat, Header, Record
from service.formats.text import byte_horizon, open_source

# A key is anything but blanks, '=' and '"'; a value is quoted (with \" and \\ escapes)
# or bare; a pair ends at a run of blanks or at the end of the line.
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_PAIR = re.compile(r'([^\s="]+)=(?:' + _QUOTED + r'|([^\s"]*))(?:[ \t]+|$)')
_CLOSED = re.compile(_QUOTED)
_ESCAPE = re.compile(r'\\(["\\])')


def parse_line(text: str) -> tuple[dict[str, str], str | None]:
    """Split one line into its pairs; on a syntax error return the pairs before it and what is wrong."""
    text = text.strip(" \t\r\n")
    # Fast path, same result as the pair-by-pair regex on the lines it accepts: no quote, and no
    # blank but spaces and tabs (every other whitespace character is a control or a separator,
    # which isprintable refuses), so the pairs are the blank-separated tokens.
    if '"' not in text and (text.replace("\t", " ") if "\t" in text else text).isprintable():
        pairs = [token.partition("=") for token in text.split()]
        cells = {key: value for key, _, value in pairs}
        if len(cells) == len(pairs) and "" not in cells and all(map(itemgetter(1), pairs)):
            return cells, None
    return _parse_pairs(text)


def _parse_pairs(text: str) -> tuple[dict[str, str], str | None]:
    """Match the pairs one by one up to the first fault."""
    cells: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        pair = _PAIR.match(text, pos)
        if pair is None:
            return cells, _diagnose(text, pos)
        key, quoted, bare = pair.groups()
        if key in cells:
            return cells, f"the key {clip(key)!r} appears twice"
        cells[key] = bare if quoted is None else _ESCAPE.sub(r"\1", quoted)
        pos = pair.end()
    return cells, None


def _diagnose(text: str, pos: int) -> str:
    """Say why no key=value pair starts at pos."""
    token = re.split(r"[ \t]", text[pos:], maxsplit=1)[0]
    key, equals, value = token.partition("=")
    if not equals:
        return f"{clip(token)!r} is not a key=value pair"
    if not key:
        return f"{clip(token)!r} has an empty key"
    if '"' in key:
        return f"the key {clip(key)!r} contains a '\"'"
    if value.startswith('"'):
        if _CLOSED.match(text, pos + len(key) + 1) is None:
            return f"the quoted value of {clip(key)!r} is not closed"
        return f"the quoted value of {clip(key)!r} is followed by text; put a blank between pairs"
    return f"the value of {clip(key)!r} contains a '\"'; quote the value and escape it as \\\""


def looks_like_kv(line: str) -> bool:
    """Tell whether a line is made only of key=value pairs (for content sniffing)."""
    cells, error = parse_line(line.strip())
    return error is None and bool(cells)


def read_header(fh: BinaryIO, fmt: FileFormat, limits: Limits) -> Header:
    """Check the file has content; kv keys come per record, so the header has no names."""
    source = open_source(fh, fmt.encoding, limits, per_line=True)
    for text in source.lines():
        if text.strip():
            return Header(names=[], data_start=source.start, data_line=1)
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
    source = open_source(fh, fmt.encoding, limits, header=header, start=start, line=first_line, per_line=True)
    if max_records is not None and max_records <= 0:
        return
    last_row = -1 if max_records is None else first_row + max_records - 1
    row, line = first_row, source.mark
    quarter, max_field, encoding = limits.max_field_bytes // 4, limits.max_field_bytes, source.codec.name
    distinct = DistinctKeys(limits, encoding, "a key=value file")
    for text in source.lines():
        body = text.strip()
        if body and body[0] != "#":
            cells, error = parse_line(body)
            if len(body) > quarter:
                _check_fields(cells, encoding, max_field, line)
            distinct.add(cells, line)
            message = None if error is None else f"line {line}: {error}"
            yield Record(row, line, source.ends[line - source.base], cells, message, line + 1)
            # Stop without reading ahead: the next line belongs to whoever resumes here.
            if row == last_row:
                return
            row += 1
        line += 1


def scan(
    fh: BinaryIO, fmt: FileFormat, header: Header, limits: Limits, chunk_rows: int, chunk_bytes: int
) -> Iterator[Cut]:
    """Cut the records into chunks, with every check iter_records makes; each Cut has its records' keys."""
    source = open_source(fh, fmt.encoding, limits, header=header, per_line=True)
    first_row, first_line, start = 1, header.data_line, header.data_start  # of the chunk being counted
    line, count = header.data_line, 0
    keys: set[str] = set()
    quarter, max_field, encoding = limits.max_field_bytes // 4, limits.max_field_bytes, source.codec.name
    distinct = DistinctKeys(limits, encoding, "a key=value file")
    if source.codec.splittable:
        horizon = 0  # a record ending on this line or later may bring the chunk to chunk_bytes
    else:
        chunk_rows = horizon = sys.maxsize  # positions count characters: one chunk
    for text in source.lines():
        body = text.strip()
        if body and body[0] != "#":
            cells, _ = parse_line(body)
            if len(body) > quarter:
                _check_fields(cells, encoding, max_field, line)
            distinct.add(cells, line)
            keys.update(cells)
            count += 1
            if count >= chunk_rows or (
                line >= horizon and (horizon := byte_horizon(source, start + chunk_bytes)) <= line
            ):
                yield Cut(first_row, first_line, start, count, frozenset(keys))
                first_row, first_line, start = first_row + count, line + 1, source.ends[line - source.base]
                count, horizon, keys = 0, 0, set()
        line += 1
    if count:
        yield Cut(first_row, first_line, start, count, frozenset(keys))


def _check_fields(cells: dict[str, str], encoding: str, max_field_bytes: int, line: int) -> None:
    """Refuse a line with a key or value over the field limit, measured in the file's bytes."""
    for key, value in cells.items():
        for text in (key, value):
            if len(text.encode(encoding)) > max_field_bytes:
                raise LimitExceeded(limit_text("a field", "max_field_bytes", max_field_bytes), line=line)
