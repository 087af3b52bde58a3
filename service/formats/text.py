"""Shared reader types, and strict, bounded line reading of text files with resumable positions."""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from service.errors import FileRejected, LimitExceeded

KIB = 1024
MIB = 1024**2
GIB = 1024**3

ZIP_MAGIC = b"PK\x03\x04"

# Longest BOM first: the UTF-32 LE BOM begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Codecs whose byte order comes from a BOM; without one CPython assumes little endian.
_WIDE = {
    "utf-16": ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")),
    "utf-32": ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be")),
}
_OWN_BOM = {
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-32-be": codecs.BOM_UTF32_BE,
}
# These encode ASCII as ASCII yet carry shift state from line to line.
_STATEFUL = {"utf-7", "hz"}
_ASCII_SAMPLE = "\n\r\t ,;|\"'=#\\azAZ09"
_CHUNK = 64 * KIB


@dataclass(frozen=True)
class Limits:
    """Size limits a file must respect (SPEC section 7)."""

    max_file_bytes: int = 2 * GIB
    max_field_bytes: int = MIB
    max_record_bytes: int = 10 * MIB
    max_xlsx_bytes: int = GIB  # total uncompressed size of all zip members


@dataclass(frozen=True)
class FileFormat:
    """How a file is to be read."""

    kind: str  # 'csv' | 'tsv' | 'kv' | 'xlsx'
    encoding: str  # python codec for text; '' for xlsx
    delimiter: str  # csv/tsv only, else ''
    sheet: str | None  # xlsx only


@dataclass(frozen=True)
class Header:
    """The header of a file and where its data begins."""

    names: list[str]
    data_start: int  # text: byte offset; xlsx: sheet row number
    data_line: int  # file line (xlsx: sheet row) of the first data record


@dataclass(frozen=True)
class Record:
    """One data record with the positions needed to resume after it."""

    source_row: int  # 1 = first data record of the file
    line: int  # file line (xlsx: sheet row) where the record starts
    end: int  # position just after this record: a resume point
    cells: list[Any] | dict[str, str]
    error: str | None = None  # a problem confined to this record
    next_line: int = 0  # line (xlsx: row) where the following record would start


def human_size(size: int) -> str:
    """Say a byte count the way the limits are configured: '1 MiB', '2 GiB', '100 bytes'."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size >= unit:
            value = size / unit
            return f"{value:.0f} {name}" if size % unit == 0 else f"{value:.1f} {name}"
    return f"{size} bytes"


def limit_text(what: str, key: str, limit: int) -> str:
    """Phrase a limit breach naming the config key and its human size."""
    return f"{what} is longer than the {key} limit ({human_size(limit)})"


def open_checked(path: Path, limits: Limits | None) -> BinaryIO:
    """Open a regular file for binary reading, refusing FIFOs, devices, directories and oversized files."""
    # O_NONBLOCK so that opening a FIFO cannot hang; it changes nothing for regular files.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRejected("the blob is not a regular file (a directory, a FIFO or a device)")
        if limits is not None and info.st_size > limits.max_file_bytes:
            raise LimitExceeded(
                f"the file has {info.st_size:,} bytes, more than the max_file_bytes limit "
                f"({human_size(limits.max_file_bytes)})"
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sniff_encoding(head: bytes) -> str:
    """Name the encoding a BOM announces, else UTF-8."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return "utf-8"


def validate_encoding(name: str) -> str:
    """Return the encoding option unchanged if Python can decode text with it."""
    try:
        # Non-empty input: Python skips the codec entirely when decoding b"".
        b"\0\0\0\0".decode(name)
    except (LookupError, UnicodeError):
        raise FileRejected(
            f"option encoding: {name!r} is not a text encoding Python knows (examples: utf-8, utf-16, latin-1, cp1252)"
        ) from None
    return name


@dataclass(frozen=True)
class Codec:
    """How the bytes of a text file are decoded, after its BOM."""

    label: str  # the encoding as named in FileFormat, for messages
    name: str  # BOM-less python codec decoding the lines
    bom_len: int
    splittable: bool  # a b'\n' byte always ends a line, so lines decode on their own


def ascii_compatible(name: str) -> bool:
    """Tell whether a codec writes ASCII as ASCII without shift state, so b'\\n' splits lines."""
    base = codecs.lookup(name).name
    if base in _STATEFUL or base.startswith("iso2022"):
        return False
    try:
        return _ASCII_SAMPLE.encode(base) == _ASCII_SAMPLE.encode("ascii")
    except UnicodeError:
        return False


def resolve_codec(label: str, head: bytes) -> Codec:
    """Pick the BOM-less codec and BOM length for a file whose first bytes are head."""
    base = codecs.lookup(validate_encoding(label)).name
    if base in ("utf-8", "utf-8-sig"):
        return Codec(label, "utf-8", 3 if head.startswith(codecs.BOM_UTF8) else 0, True)
    if base in _WIDE:
        for bom, name in _WIDE[base]:
            if head.startswith(bom):
                return Codec(label, name, len(bom), False)
        return Codec(label, _WIDE[base][0][1], 0, False)
    if base in _OWN_BOM:
        bom = _OWN_BOM[base]
        return Codec(label, base, len(bom) if head.startswith(bom) else 0, False)
    return Codec(label, base, 0, ascii_compatible(base))


def text_codec(fh: BinaryIO, label: str) -> Codec:
    """Resolve the codec of an open text file, refusing a workbook passed off as text."""
    fh.seek(0)
    head = fh.read(4)
    if head.startswith(ZIP_MAGIC):
        raise FileRejected(
            "the file is a zip archive (an XLSX workbook?), not text; "
            "give it the .xlsx extension or the option format=xlsx"
        )
    return resolve_codec(label, head)


class LineReader:
    """Iterates over the decoded lines of a text file, tracking position, line number and record size.

    Positions are byte offsets when the codec is splittable; otherwise they count the
    characters decoded after the BOM, since bytes cannot be mapped back to lines there.
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
                raise self._too_long()
            if b"\0" in raw:
                raise self._nul()
            try:
                text = raw.decode(name)
            except UnicodeDecodeError as exc:
                raise self._undecodable(raw[exc.start], exc.start) from None
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
                raise self._too_long()  # characters: a lower bound of the bytes
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
            raise self._undecodable(exc.object[exc.start], None, before.count("\n")) from None
        if "\0" in text:
            raise self._nul(text.count("\n", 0, text.index("\0")))
        return text

    def _finish_line(self, text: str) -> str:
        size = len(text.encode(self.codec.name))
        if self.size + size - self.record_size > self._max:
            raise self._too_long()
        self.pos += len(text)
        self.size += size
        self.next_line += 1
        return text

    def _too_long(self) -> LimitExceeded:
        what = limit_text("a record", "max_record_bytes", self._max)
        return LimitExceeded(what, line=self.record_line)

    def _nul(self, lines_ahead: int = 0) -> FileRejected:
        return FileRejected(
            "the line contains a NUL character: the file is binary or not in the "
            f"{self.codec.label} encoding (give the right encoding option)",
            line=self.next_line + lines_ahead,
        )

    def _undecodable(self, byte: int, column: int | None, lines_ahead: int = 0) -> FileRejected:
        where = f" at byte {column + 1} of the line" if column is not None else ""
        return FileRejected(
            f"the file is not valid {self.codec.label} text: byte 0x{byte:02x}{where} cannot be "
            "decoded (save the file as UTF-8, or give its encoding in the encoding option)",
            line=self.next_line + lines_ahead,
        )


def open_lines(
    fh: BinaryIO,
    label: str,
    limits: Limits,
    *,
    header: Header | None = None,
    start: int | None = None,
    line: int | None = None,
) -> LineReader:
    """Position a LineReader at start: by default at the top, or at the header's data start."""
    codec = text_codec(fh, label)
    top = codec.bom_len if codec.splittable else 0
    if start is None:
        start, line = (header.data_start, header.data_line) if header else (top, 1)
    elif line is None:
        known = header is not None and start == header.data_start
        line = header.data_line if header and known else _line_at(fh, codec, limits, top, start)
    if codec.splittable:
        _check_resume_point(fh, codec, start)
    return LineReader(fh, codec, limits.max_record_bytes, start, line)


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
    if start == codec.bom_len or start >= os.fstat(fh.fileno()).st_size:
        return
    if start > codec.bom_len:
        fh.seek(start - 1)
        if fh.read(1) == b"\n":
            return
    raise ValueError(f"offset {start} is not the start of a line")
