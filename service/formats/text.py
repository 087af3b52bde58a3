"""Strict, bounded line reading of text files with resumable positions: a block at a time when
the codec splits on b'\\n', else line by line from an incremental decoder."""

from __future__ import annotations

import codecs
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate, chain
from operator import methodcaller
from typing import Any, BinaryIO

from service.errors import LimitExceeded
from service.formats.decoding import Codec, nul_error, text_codec, undecodable_error
from service.formats.limits import KIB, Limits, limit_text
from service.formats.records import Header

_CHUNK = 64 * KIB
# Bytes read at a time by BlockSource; a module variable so that tests can make blocks tiny.
BLOCK_BYTES = 64 * KIB


def too_long_error(max_record_bytes: int, record_line: int) -> LimitExceeded:
    """A record (or one line of it) passes max_record_bytes; named by the line where the record starts."""
    return LimitExceeded(limit_text("a record", "max_record_bytes", max_record_bytes), line=record_line)


class LineReader:
    """Iterates over the decoded lines of a text file, tracking position, line number and record size.

    Positions are byte offsets when the codec is splittable; otherwise they count the
    characters decoded after the BOM, since bytes cannot be mapped back to lines there.
    Only non-splittable files (and line counting for a resume without a line number) are
    read with it; BlockSource reads the others a block at a time, to the same rules.
    """

    def __init__(self, fh: BinaryIO, codec: Codec, max_record_bytes: int, start: int, line: int) -> None:
        self.codec = codec
        self.pos = start  # position just after the last line read
        self.size = 0  # bytes read so far by this reader
        self.next_line = line  # number of the next line to read
        self.exhausted = False  # the end of the file was reached
        self.record_size = 0  # self.size where the current record began
        self.record_line = line  # line where the current record began
        self._fh = fh
        self._max = max_record_bytes
        fh.seek(start if codec.splittable else codec.bom_len)

    @property
    def line(self) -> int:
        """Number of the last line read."""
        return self.next_line - 1

    def mark(self) -> None:
        """Start a new record: the record size limit counts the lines read from now on."""
        self.record_size = self.size
        self.record_line = self.next_line

    def __iter__(self) -> Iterator[str]:
        return self._split_lines() if self.codec.splittable else self._decoded_lines()

    def _split_lines(self) -> Iterator[str]:
        # Bounded readline: a file without newlines can never be read whole.
        readline, limit, name = self._fh.readline, self._max + 1, self.codec.name
        while raw := readline(limit):
            size = len(raw)
            # One test bounds a line and a record of many lines (quoted newlines) alike.
            if self.size + size - self.record_size > self._max:
                raise too_long_error(self._max, self.record_line)
            if b"\0" in raw:
                raise nul_error(self.codec, self.next_line)
            try:
                text = raw.decode(name)
            except UnicodeDecodeError as exc:
                raise undecodable_error(self.codec, raw[exc.start], exc.start, self.next_line) from None
            self.pos += size
            self.size += size
            self.next_line += 1
            yield text
        self.exhausted = True

    def _decoded_lines(self) -> Iterator[str]:
        # Encodings such as UTF-16 cannot be split on b'\n': decode chunks, then split text.
        decoder = codecs.getincrementaldecoder(self.codec.name)("strict")
        skip = self.pos  # characters before the resume point: decoded again, dropped
        last_dropped = ""
        partial: list[str] = []
        partial_len = 0
        while True:
            chunk = self._fh.read(_CHUNK)
            text = self._decode_chunk(decoder, chunk)
            if skip:
                dropped, text = text[:skip], text[skip:]
                skip -= len(dropped)
                last_dropped = dropped[-1:] or last_dropped
            if last_dropped and text:
                if last_dropped != "\n":
                    raise ValueError(f"position {self.pos} is not the start of a line")
                last_dropped = ""
            pieces = text.split("\n")
            for piece in pieces[:-1]:
                yield self._finish_line("".join(partial) + piece + "\n")
                partial, partial_len = [], 0
            partial.append(pieces[-1])
            partial_len += len(pieces[-1])
            if self.size - self.record_size + partial_len > self._max:
                raise too_long_error(self._max, self.record_line)  # characters: a lower bound of the bytes
            if not chunk:
                if partial_len:
                    yield self._finish_line("".join(partial))
                self.exhausted = True
                return

    def _decode_chunk(self, decoder: codecs.IncrementalDecoder, chunk: bytes) -> str:
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            # exc.object holds the bytes after the last decoded character.
            before = bytes(exc.object[: exc.start]).decode(self.codec.name, "replace")
            raise undecodable_error(
                self.codec, exc.object[exc.start], None, self.next_line + before.count("\n")
            ) from None
        if "\0" in text:
            raise nul_error(self.codec, self.next_line + text.count("\n", 0, text.index("\0")))
        return text

    def _finish_line(self, text: str) -> str:
        size = len(text.encode(self.codec.name))
        if self.size + size - self.record_size > self._max:
            raise too_long_error(self._max, self.record_line)
        self.pos += len(text)
        self.size += size
        self.next_line += 1
        return text


class BlockSource:
    """The lines of a file whose codec splits on b'\\n', read, checked and decoded a block at a time.

    lines() feeds a consumer (csv.reader, or the kv loop) line by line, but does per block what
    LineReader does per line, with the same checks, in the same order, naming the same lines:
    a block is checked whole (NUL, decoding, sizes) and, when clean, its lines are handed over
    as one list with no Python work per line. A block with a problem, or one big enough for a
    record in it to pass a size limit, is handed over line by line with LineReader's exact
    per-line checks, so that an error is raised only when the consumer reaches its line
    (a reader told to stop after N records never reads the line after them).

    The consumer tells where its current record begins by setting `mark` (the record's first
    line) after each record; per_line sources (kv: every line is a record) need no mark.

    raw_lines() hands over a UTF-8 file's lines undecoded, with the same checks but the
    decoding, for a consumer that parses bytes (JSON Lines, see utf8_lines): a block is then
    careful only for its NUL or its size, and the consumer refuses an undecodable line itself.

    While the consumer handles a record whose last line is n (n in the current block),
    ends[n - base] is the position just after line n: the record's Record.end. `careful`
    is True when the current block was handed over line by line (the consumer must then
    check the field size itself, see record_bytes) or the file is exhausted.
    """

    __slots__ = (
        "codec",
        "start",
        "mark",
        "ends",
        "base",
        "careful",
        "exhausted",
        "_fh",
        "_first_line",
        "_max_record",
        "_fast_limit",
        "_per_line",
        "_block_rs",
    )

    def __init__(self, fh: BinaryIO, codec: Codec, limits: Limits, start: int, line: int, per_line: bool) -> None:
        self.codec = codec
        self.start = start  # where reading begins
        self.mark = line  # first line of the consumer's current record
        self.ends: Sequence[int] = [start]
        self.base = line - 1
        self.careful = False
        self.exhausted = False  # the consumer asked for a line after the last one
        self._fh = fh
        self._first_line = line
        self._max_record = limits.max_record_bytes
        # A block no bigger than this (counting the part of its first record read before it)
        # can hold no record over a limit, nor a field over max_field_bytes.
        self._fast_limit = min(limits.max_record_bytes, limits.max_field_bytes)
        self._per_line = per_line
        self._block_rs = start  # where the record in progress at the current block's start began

    def lines(self) -> Iterator[str]:
        """Iterate over the decoded lines (each with its b'\\n' ending, if any) from the start."""
        name = self.codec.name
        return chain.from_iterable(self._blocks(bytes.decode if name == "utf-8" else methodcaller("decode", name)))

    def raw_lines(self) -> Iterator[bytes]:
        """Iterate over the lines' own bytes, with every check lines() makes but their decoding, which
        the consumer makes (see utf8_lines): a UTF-8 file's only."""
        if self.codec.name != "utf-8":
            raise ValueError(f"raw lines are UTF-8, not {self.codec.name}")
        return chain.from_iterable(self._blocks(None))

    def record_bytes(self, first: int, last: int) -> int:
        """Size in bytes of the record on lines first..last, last being in the current block."""
        base = self.base
        begin = self.ends[first - 1 - base] if first > base else self._block_rs
        return self.ends[last - base] - begin

    def _blocks(self, decode: Callable[[bytes], str] | None) -> Iterator[Sequence[Any]]:
        """The blocks' lines, decoded by decode (None: left as bytes, and not checked for their decoding)."""
        fh, max_record, fast_limit, per_line = self._fh, self._max_record, self._fast_limit, self._per_line
        fh.seek(self.start)
        read, size = fh.read, BLOCK_BYTES
        offset, line = self.start, self._first_line  # where the next block begins
        prev_first, prev_ends, prev_rs = line, self.ends, offset
        tail = b""
        eof = False
        while not eof:
            # Read up to the last b'\n' of the data read; a line longer than max_record_bytes
            # is refused before it is read whole, whatever the block size.
            parts, length = [tail], len(tail)
            while True:
                data = read(size)
                if not data:
                    eof, tail = True, b""
                    break
                cut = data.rfind(b"\n") + 1
                if cut:
                    parts.append(data[:cut])
                    tail = data[cut:]
                    break
                parts.append(data)
                length += len(data)
                if length > max_record:
                    raise too_long_error(max_record, line if per_line else self.mark)
            raw = b"".join(parts)
            if not raw:
                break
            if b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n"):
                pieces = _split_lf(raw)  # a lone b'\r' does not end a line
            else:
                pieces = raw.splitlines(True)
            ends = list(accumulate(map(len, pieces), initial=offset))
            # Where the record in progress (if any) began: here, in the last block, or before it.
            first = line if per_line else self.mark
            if first >= line:
                rs = offset
            elif first >= prev_first:
                rs = prev_ends[first - prev_first]
            else:
                rs = prev_rs
            self.ends, self.base, self._block_rs = ends, line - 1, rs
            texts: Sequence[Any] | None = None
            if ends[-1] - rs <= fast_limit and b"\0" not in raw:
                try:
                    texts = pieces if decode is None else list(map(decode, pieces))
                except UnicodeDecodeError:
                    texts = None
            if texts is not None:
                self.careful = False
                yield texts
            else:
                self.careful = True
                yield from self._checked(pieces, ends, line, rs, decode)
            prev_first, prev_ends, prev_rs = line, ends, rs
            offset = ends[-1]
            line += len(pieces)
        self.exhausted = self.careful = True

    def _checked(
        self, pieces: list[bytes], ends: list[int], line: int, rs: int, decode: Callable[[bytes], str] | None
    ) -> Iterator[tuple[str | bytes]]:
        """Hand over a block line by line, with LineReader's checks in LineReader's order (decode None:
        the lines' bytes, their decoding left to the consumer)."""
        max_record, per_line = self._max_record, self._per_line
        for i, piece in enumerate(pieces):
            number = line + i
            if per_line:
                first, begin = number, ends[i]
            else:
                first = self.mark
                begin = ends[first - line] if first >= line else rs
            if ends[i + 1] - begin > max_record:
                raise too_long_error(max_record, first)
            if b"\0" in piece:
                raise nul_error(self.codec, number)
            if decode is None:
                yield (piece,)
                continue
            try:
                text = decode(piece)
            except UnicodeDecodeError as exc:
                raise undecodable_error(self.codec, piece[exc.start], exc.start, number) from None
            yield (text,)


def _split_lf(raw: bytes) -> list[bytes]:
    """Split on b'\\n' only, keeping the endings (bytes.splitlines also splits on a lone b'\\r')."""
    pieces = raw.split(b"\n")
    last = pieces.pop()
    lines = [piece + b"\n" for piece in pieces]
    if last:
        lines.append(last)
    return lines


class LegacySource:
    """BlockSource's interface over a LineReader, for codecs that cannot be split on b'\\n' (UTF-16...)."""

    careful = True  # always: every line is checked by the LineReader

    def __init__(self, reader: LineReader, per_line: bool) -> None:
        self.codec = reader.codec
        self.start = reader.pos
        self.ends: Sequence[int] = (reader.pos,)
        self.base = reader.line
        self._reader = reader
        self._per_line = per_line

    @property
    def exhausted(self) -> bool:
        return self._reader.exhausted

    @property
    def mark(self) -> int:
        return self._reader.record_line

    @mark.setter
    def mark(self, line: int) -> None:
        # The reader knows where the record begins: just after the last line it read.
        del line
        self._reader.mark()

    def lines(self) -> Iterator[str]:
        reader = self._reader
        for text in reader:
            if self._per_line:
                reader.mark()
            self.ends, self.base = (reader.pos,), reader.line
            yield text

    def record_bytes(self, first: int, last: int) -> int:
        del first, last  # the record is the lines read since the last mark
        return self._reader.size - self._reader.record_size


LineSource = BlockSource | LegacySource


def open_source(
    fh: BinaryIO,
    label: str,
    limits: Limits,
    *,
    header: Header | None = None,
    start: int | None = None,
    line: int | None = None,
    per_line: bool = False,
) -> LineSource:
    """Position a line source at start: by default at the top, or at the header's data start."""
    codec = text_codec(fh, label)
    top = codec.bom_len if codec.splittable else 0
    if start is None:
        start, line = (header.data_start, header.data_line) if header else (top, 1)
    elif line is None:
        known = header is not None and start == header.data_start
        line = header.data_line if header and known else _line_at(fh, codec, limits, top, start)
    if codec.splittable:
        _check_resume_point(fh, codec, start)
        return BlockSource(fh, codec, limits, start, line, per_line)
    return LegacySource(LineReader(fh, codec, limits.max_record_bytes, start, line), per_line)


def utf8_lines(source: LineSource) -> Iterator[bytes]:
    """The source's lines as UTF-8 bytes (each with its ending), for a consumer of UTF-8 (JSON Lines).

    A UTF-8 file's lines are its own bytes, with every check lines() makes but their decoding; a
    file in another codec gives its decoded lines encoded again. So the consumer must take each
    line through a parser that refuses what is not UTF-8 exactly as Python's codec does (orjson
    validates its input first), or through utf8_text, before it gives anything for a later line:
    an undecodable line then fails the file at its line, with the message lines() would give.
    """
    if isinstance(source, BlockSource) and source.codec.name == "utf-8":
        return source.raw_lines()
    return map(str.encode, source.lines())


def utf8_text(source: LineSource, piece: bytes, line: int) -> str:
    """Line number `line` of utf8_lines as text; a line that is not UTF-8 fails the file as lines() fails it."""
    try:
        return piece.decode()
    except UnicodeDecodeError as exc:
        raise undecodable_error(source.codec, piece[exc.start], exc.start, line) from None


def byte_horizon(source: LineSource, target: int) -> int:
    """The first line of the current block whose end reaches position target, else the next block's first line.

    A scan asks again only for records ending on or after the line returned.
    """
    ends = source.ends
    return source.base + bisect_left(ends, target)


def _line_at(fh: BinaryIO, codec: Codec, limits: Limits, top: int, start: int) -> int:
    """Count the lines before a position, for callers that resume without a line number."""
    reader = LineReader(fh, codec, limits.max_record_bytes, top, 1)
    if start <= top:
        return 1
    for _ in reader:
        if reader.pos >= start:
            break
    return reader.next_line


def _check_resume_point(fh: BinaryIO, codec: Codec, start: int) -> None:
    """Refuse an offset that is not the start of a line: parsing from there would be garbage."""
    # No seek to the end: a file read once (spool.py) does not know its size yet.
    if start == codec.bom_len:
        return
    if start > codec.bom_len:
        fh.seek(start - 1)
        before = fh.read(2)
        # after a newline, at the end of the file, or past it
        if before[:1] == b"\n" or len(before) < 2:
            return
    raise ValueError(f"offset {start} is not the start of a line")
