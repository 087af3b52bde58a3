"""JSON Lines (SPEC 18): one JSON object per line, its keys read like header names (aliases
apply). A line that is not a JSON object is a bad row, not a bad file: its record holds the
line's raw text under RAW_KEY. A blank line is skipped and counts for nothing.

A JSON Lines file is UTF-8 (RFC 8259), after an optional BOM. Every value is kept as JSON
gives it: strings are coerced like cells later, other values go to the schema as they are.
"""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Callable, Iterator
from itertools import chain, islice
from typing import Any, BinaryIO, NoReturn

import orjson

from service.errors import FileRejected, LimitExceeded
from service.formats.limits import DistinctKeys, Limits, limit_text
from service.formats.records import Cut, FileFormat, Header, Record
from service.formats.text import LineSource, byte_horizon, open_source, utf8_lines, utf8_text

# The key of the one cell a rejected line keeps: its raw text (the line without its ending).
RAW_KEY = "_line"
# Deepest nesting kept: a value in a line may hold arrays and objects (rejects keep them), but
# never so deep that writing them back (rejects, views) could meet Python's recursion limit.
MAX_DEPTH = 64
_BLANKS = " \t\r\n"  # JSON's white space (RFC 8259): what may surround a value on its line
_BLANK_BYTES = _BLANKS.encode()
# Bytes sought in a line's bytes: an int is found by memchr, where a bytes needle costs `in` a
# failed int conversion first (a raised and cleared TypeError), several times the search.
_BRACE, _BRACKET, _BACKSLASH = ord("{"), ord("["), ord("\\")
_ENDINGS = frozenset({"\n", "\r\n", ""})
_UTF8 = frozenset({"utf-8", "utf-8-sig"})
_TOO_DEEP = f"the JSON is nested more than {MAX_DEPTH} levels deep"
_KINDS = {str: "string", int: "number", float: "number", bool: "true/false", list: "array", dict: "object"}


class _NotJson(ValueError):
    """A number JSON cannot carry: NaN, Infinity, or one too large for a double."""


def _constant(name: str) -> NoReturn:
    raise _NotJson(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if number - number != 0.0:  # inf - inf is nan; NaN is refused by _constant before this
        raise _NotJson(f"the number {text[:40]} is out of range")
    return number


# Built once, like json.loads's own decoder: strict JSON, finite numbers only.
# scan_once(text, index) -> (value, end): the decoder's C scanner, without json.loads's per-call checks.
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_constant)
_scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
# The fast path: orjson parses a line about 3x faster than the json module. It is strict JSON
# too (no NaN, no Infinity, no trailing text), but reads an integer past 64 bits as a float, so
# a line with such a float, and any line it refuses, goes the json module's way, which keeps
# such integers exact and says precisely what is wrong. It reads a line's own bytes (see
# utf8_lines), after checking they are UTF-8 as strictly as Python's codec does; a line it
# refuses is decoded by utf8_text, which refuses the file at a line that is not UTF-8.
_loads = orjson.loads
_FAST_ERROR = orjson.JSONDecodeError
_INT64 = 2.0**63
# Lines of one block read at a time (an orjson call each, no Python code between them), then
# judged together: few enough that their objects take little memory.
_BATCH = 64
# The values of a flat object that orjson reads exactly as the json module does.
_SCALARS = frozenset({str, int, bool, type(None)})


def check_encoding(encoding: str) -> None:
    """Refuse any encoding but UTF-8: JSON text is UTF-8 (RFC 8259)."""
    if codecs.lookup(encoding).name not in _UTF8:
        raise FileRejected(
            f"a JSON Lines file must be UTF-8 (RFC 8259), not {encoding}; save it as UTF-8 and import it again"
        )


def looks_like_jsonl(line: str) -> bool:
    """Tell whether a line (the first non-blank one of a file) is one JSON object (for content sniffing)."""
    line = line.strip(_BLANKS)
    if not line.startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def parse_line(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Read one non-blank line: (the object, None), or (None, what is wrong with the line)."""
    fast = _fast(text)
    if fast is not None:
        return fast, None
    return _parse_slowly(text)


def _parse_slowly(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """parse_line of a line that _fast does not take (the json module's careful reading)."""
    try:
        value, end = _scan(text, 0 if text[0] == "{" else len(text) - len(text.lstrip(_BLANKS)))
    except StopIteration as stop:
        return None, _syntax(text, "Expecting value", stop.value)
    except json.JSONDecodeError as exc:
        return None, _syntax(text, exc.msg, exc.pos)
    except _NotJson as exc:
        return None, f"not valid JSON: {exc}"
    except ValueError:  # more digits than Python's int/str conversion allows
        return None, "not valid JSON: a number has too many digits"
    except RecursionError:
        return None, _TOO_DEEP
    rest = text[end:]  # usually just the line ending
    if rest not in _ENDINGS and rest.strip(_BLANKS):
        return None, _syntax(text, "Extra data after the value", end + len(rest) - len(rest.lstrip(_BLANKS)))
    if value.__class__ is not dict:
        return None, f"the line is a JSON {_KINDS.get(value.__class__, 'null')}, not an object"
    # Rare shapes, found by cheap searches of the text first: deep nesting, and escapes that
    # make a string no database can store (\u0000, a lone UTF-16 surrogate).
    if (("[" in text or text.find("{", 1) >= 0) and text.count("{") + text.count("[") > MAX_DEPTH) or (
        "\\" in text and ("\\u0000" in text or "\\ud" in text or "\\uD" in text)
    ):
        problem = _unstorable(value)
        if problem is not None:
            return None, problem
    return value, None


def _flat(text: str) -> dict[str, Any] | None:
    """The object of a line that starts with "{" when orjson reads it and it is flat, with no
    \\u escape (so no NUL and no lone surrogate); else None, and parse_line reads it the careful
    way. Its keys are exact; a number may not be (see _fast)."""
    try:
        value = _loads(text)
    except _FAST_ERROR:
        return None
    return _flat_of(text.encode(), value)


def _flat_of(line: bytes, value: Any) -> dict[str, Any] | None:
    """_flat of a line's bytes, from what orjson read in them (None: nothing)."""
    if (
        value.__class__ is not dict
        or line[0] != _BRACE
        or _BRACKET in line
        or line.find(_BRACE, 1) >= 0
        or (_BACKSLASH in line and line.find(b"\\u") >= 0)
    ):
        return None
    return value  # type: ignore[no-any-return]


def _fast(text: str) -> dict[str, Any] | None:
    """_flat's object, but None when a number in it may be an integer orjson could not hold (it
    reads one past 64 bits as a float): the json module keeps it exact."""
    return _exact(_flat(text))


def _exact(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A flat object from orjson, or None when a float in it may stand for a bigger integer."""
    if value is not None and float in map(type, value.values()):
        if any(v.__class__ is float and v.is_integer() and abs(v) >= _INT64 for v in value.values()):
            return None
    return value


def _batch(source: LineSource, lines: Iterator[bytes], first: bytes, line: int, most: int) -> list[bytes]:
    """Line `line` (first) and the lines after it in the source's current block, at most `most`
    (and _BATCH) in all. The block was read and checked whole, so taking them reads and raises
    nothing; a careful block hands over its lines one at a time, and so does this."""
    more = 0 if source.careful else min(source.base + len(source.ends) - 1 - line, most - 1, _BATCH - 1)
    return [first, *islice(lines, more)] if more > 0 else [first]


def _parsed(pieces: list[bytes]) -> list[Any]:
    """What orjson reads in each line (one call per line, no Python code between them); None
    for a line it refuses (not UTF-8, or not JSON), as for a line that is null: _parse_slowly
    reads those, once utf8_text has decoded them."""
    values: list[Any] = []
    parsed = map(_loads, pieces)
    while True:
        try:
            values.extend(parsed)  # appends as it goes; the map goes on after the line refused
            return values
        except _FAST_ERROR:
            values.append(None)


def _fast_batch(pieces: list[bytes]) -> list[dict[str, Any] | None]:
    """_fast of each line. When every line is an object whose values are strings, integers
    (orjson's are exact), true, false or null, each is flat and holds no float, so a line is
    taken unless it does not start with "{" or has a \\u escape, as _flat says; otherwise each
    line is tested alone."""
    values = _parsed(pieces)
    try:
        flat = _SCALARS.issuperset(map(type, chain.from_iterable(map(dict.values, values))))
    except TypeError:  # a line that is not an object
        flat = False
    if not flat:
        return [_exact(_flat_of(piece, value)) for piece, value in zip(pieces, values, strict=True)]
    return [
        value if piece[0] == _BRACE and (_BACKSLASH not in piece or piece.find(b"\\u") < 0) else None
        for piece, value in zip(pieces, values, strict=True)
    ]


def _within(keys: set[str], values: list[Any]) -> bool:
    """Tell whether every line was read by orjson (so it is a record, not a blank line) and has
    no key outside keys. Such a line adds no key to the chunk's whether or not parse_line would
    keep it, so the scan need not ask (a line that is not an object has none of its own)."""
    try:
        return all(map(keys.issuperset, values))
    except TypeError:  # None, a number, true or false: not iterable
        return False


def _syntax(text: str, message: str, position: int) -> str:
    """A JSON syntax error, naming the character of the line where it is found (or its end)."""
    if position >= len(text.rstrip(_BLANKS)):
        return f"not valid JSON: {message} at the end of the line"
    return f"not valid JSON: {message} at character {position + 1}"


def _unstorable(value: dict[str, Any]) -> str | None:
    """What makes a parsed line unfit to keep (nesting past MAX_DEPTH, a NUL or a lone surrogate), or None."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return _TOO_DEEP
        children = list(item.values()) if item.__class__ is dict else item
        strings = [*item, *children] if item.__class__ is dict else children
        for string in strings:
            if string.__class__ is str:
                if "\0" in string:
                    return "a JSON string holds \\u0000 (a NUL character), which cannot be stored"
                try:
                    string.encode()
                except UnicodeEncodeError:
                    return "a JSON string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
        stack.extend((child, depth + 1) for child in children if child.__class__ in (dict, list))
    return None


def read_header(fh: BinaryIO, fmt: FileFormat, limits: Limits) -> Header:
    """Check the file has content; JSON keys come per record, so the header has no names."""
    source = open_source(fh, fmt.encoding, limits, per_line=True)
    for text in source.lines():
        if text.strip(_BLANKS):
            return Header(names=[], data_start=source.start, data_line=1)
    raise FileRejected("the file is empty: it has no JSON line")


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
    """Yield one record per non-blank line from start (default: the top)."""
    source = open_source(fh, fmt.encoding, limits, header=header, start=start, line=first_line, per_line=True)
    if max_records is not None and max_records <= 0:
        return
    last_row = sys.maxsize if max_records is None else first_row + max_records - 1
    row, line = first_row, source.mark
    quarter, max_field = limits.max_field_bytes // 4, limits.max_field_bytes
    distinct = DistinctKeys(limits, "utf-8", "a JSON Lines file")
    seen = distinct.seen
    lines = utf8_lines(source)
    for first in lines:
        # No line past the last record: a blank line only makes a batch's records fewer.
        batch = _batch(source, lines, first, line, last_row - row + 1)
        ends, base = source.ends, source.base
        # The common line, one flat object, is read by _fast_batch; any other is decoded and read
        # the careful way (_fast would not take it either).
        for piece, cells in zip(batch, _fast_batch(batch), strict=True):
            if cells is not None or piece[0] == _BRACE or piece.strip(_BLANK_BYTES):
                error = None
                if cells is None:
                    text = utf8_text(source, piece, line)
                    cells, error = _parse_slowly(text)
                end = ends[line - base]
                if cells is None:
                    raw = {RAW_KEY: text.rstrip("\r\n")}
                    yield Record(row, line, end, raw, f"line {line}: {error}", line + 1)
                else:
                    # Its bytes, at least its characters: a field over the limit has more than a quarter.
                    if len(piece) > quarter:
                        _check_fields(cells, max_field, line)
                    if not seen.issuperset(cells):
                        distinct.add(cells, line)
                    yield Record(row, line, end, cells, None, line + 1)
                # Stop without reading ahead: the next line belongs to whoever resumes here.
                if row == last_row:
                    return
                row += 1
            line += 1


def scan(
    fh: BinaryIO, fmt: FileFormat, header: Header, limits: Limits, chunk_rows: int, chunk_bytes: int
) -> Iterator[Cut]:
    """Cut the records into chunks, with every check iter_records makes; each Cut has its objects' keys."""
    source = open_source(fh, fmt.encoding, limits, header=header, per_line=True)
    first_row, first_line, start = 1, header.data_line, header.data_start  # of the chunk being counted
    line, count = header.data_line, 0
    keys: set[str] = set()
    quarter, max_field = limits.max_field_bytes // 4, limits.max_field_bytes
    distinct = DistinctKeys(limits, "utf-8", "a JSON Lines file")
    if source.codec.splittable:
        horizon = 0  # a record ending on this line or later may bring the chunk to chunk_bytes
    else:
        chunk_rows = horizon = sys.maxsize  # positions count characters: one chunk
    seen = distinct.seen
    lines = utf8_lines(source)
    for first in lines:
        batch = _batch(source, lines, first, line, sys.maxsize)
        values = _parsed(batch)
        if line >= horizon:
            horizon = byte_horizon(source, start + chunk_bytes)
        # The common batch: records with no key new to the chunk, no long line, no cut among them.
        if (
            count + len(batch) < chunk_rows
            and horizon >= line + len(batch)
            and _within(keys, values)
            and sum(map(len, batch)) <= quarter
        ):
            count += len(batch)
            line += len(batch)
            continue
        for piece, value in zip(batch, values, strict=True):
            if piece[0] == _BRACE or piece.strip(_BLANK_BYTES):
                cells = _flat_of(piece, value)  # keys are all the scan needs
                if cells is None:
                    cells, _ = _parse_slowly(utf8_text(source, piece, line))
                if cells is not None:
                    if len(piece) > quarter:
                        _check_fields(cells, max_field, line)
                    if not keys.issuperset(cells):  # the chunk's keys are among the file's (seen)
                        keys.update(cells)
                        if not seen.issuperset(cells):
                            distinct.add(cells, line)
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


def _check_fields(cells: dict[str, Any], max_field_bytes: int, line: int) -> None:
    """Refuse a line with a key or value over the field limit: a string's UTF-8 bytes, another value's JSON text."""
    for key, value in cells.items():
        for item in (key, value):
            if item.__class__ is str:
                size = len(item.encode())
            elif item.__class__ in (dict, list):
                size = len(json.dumps(item, ensure_ascii=False).encode())
            else:
                continue  # a number, true/false or null: a few bytes
            if size > max_field_bytes:
                raise LimitExceeded(limit_text("a field", "max_field_bytes", max_field_bytes), line=line)
