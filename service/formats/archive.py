"""ZIP archives (SPEC section 18): the one data file of an archive, read within the limits.

A file that starts like a ZIP goes to `is_workbook` first: an XLSX package is a ZIP too, and
is read as a workbook. Otherwise `choose` picks the member to import (the only data file, or
the one option member names; directories, `__MACOSX/` and dot-files are not data files) and
`open_member` gives a forward-only reader of its decompressed bytes, counted against
max_file_bytes and max_compression_ratio as they come. Each takes a seekable binary file
and leave it open.

Declared sizes lie. zipfile reads the whole central directory in one read, of the size the
end record claims, and builds an object per entry: the end records are read here first, the
way zipfile reads them, and an archive whose central directory passes MAX_DIRECTORY_BYTES or
MAX_MEMBERS entries is refused before zipfile sees it (and no read zipfile asks for may pass
MAX_DIRECTORY_BYTES whatever it found). A member is refused when it declares more than the
limits allow, and its reader counts what it gives rather than trusting what it declares.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, Protocol

from service.errors import FileRejected, LimitExceeded
from service.formats.limits import MIB, Limits, clip, human_size, limit_text, listed

__all__ = ["MAX_DIRECTORY_BYTES", "MAX_MEMBERS", "MemberReader", "choose", "data_members", "is_workbook", "open_member"]

MAX_DIRECTORY_BYTES = 32 * MIB  # of the central directory, which zipfile holds in memory whole
MAX_MEMBERS = 100_000  # entries of the central directory, each a ZipInfo in memory
_PIECE_BYTES = MIB  # decompressed at most per read of a member
_BUFFER_BYTES = 64 * 1024
_TYPES_BYTES = MIB  # of [Content_Types].xml read to recognise a workbook

_END = struct.Struct("<4s4H2LH")  # end of central directory record
_LOCATOR = struct.Struct("<4sLQL")  # zip64 end of central directory locator
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record (no extensible data)
_ENTRY_BYTES = 46  # the fixed part of a central directory entry
_END_SIG, _LOCATOR_SIG, _END64_SIG, _ENTRY_SIG = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06", b"PK\x01\x02"

_ENCRYPTED = 0x1  # general purpose flag bit 0 (bit 6, strong encryption, comes with it)
_WINZIP_AES = 99  # the "method" of a WinZip AES-encrypted member
_READ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# Compression methods by number (APPNOTE 4.4.5), to name the one a member uses.
METHODS = {1: "shrink", **dict.fromkeys(range(2, 6), "reduce"), 6: "implode", 9: "deflate64", 10: "PKWARE DCL implode"}
METHODS |= {12: "bzip2", 14: "lzma", 18: "IBM TERSE", 19: "IBM LZ77", 20: "zstd", 93: "zstd", 94: "mp3", 95: "xz"}
METHODS |= {96: "jpeg", 97: "wavpack", 98: "ppmd"}

# A spreadsheet package: read (or refused by name, as .xlsb and .ods are) by the workbook reader.
_WORKBOOK_PARTS = ("xl/workbook.xml", "xl/workbook.bin")
_WORKBOOK_TYPES = re.compile(
    rb"spreadsheetml\.(?:sheet|template)\.main\+xml|ms-excel\.(?:sheet|template)\.(?:binary\.)?macroEnabled\.main"
)
_ODS_MIMETYPE = b"application/vnd.oasis.opendocument.spreadsheet"

# What zipfile raises on a damaged archive or member (UnicodeDecodeError is a ValueError).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)


def is_workbook(fh: BinaryIO) -> bool:
    """Tell whether the ZIP is a spreadsheet package (XLSX, XLSM, and the .xlsb and .ods the workbook
    reader refuses by name), to be read as a workbook rather than as an archive of data files."""
    with _opened(fh) as (archive, _):
        names = set(archive.namelist())
        if any(part in names for part in _WORKBOOK_PARTS):
            return True
        if "mimetype" in names and _head(archive, "mimetype", 100).startswith(_ODS_MIMETYPE):
            return True
        types = "[Content_Types].xml"
        return types in names and _WORKBOOK_TYPES.search(_head(archive, types, _TYPES_BYTES)) is not None


def data_members(fh: BinaryIO) -> list[zipfile.ZipInfo]:
    """The members that are data files, in the archive's order: not directories, nothing under
    `__MACOSX/`, and no dot-file (a name any part of which starts with '.')."""
    with _opened(fh) as (archive, _):
        return [info for info in archive.infolist() if _is_data(info.filename)]


def choose(fh: BinaryIO, member: str | None) -> zipfile.ZipInfo:
    """The member to import: the data file option member names (None or "": no option), else
    the only data file; refuse an ambiguous or missing choice, and a member that is encrypted
    or compressed other than by stored or deflate."""
    members = data_members(fh)
    if member is not None and not isinstance(member, str):
        raise FileRejected(f"option member: {clip(repr(member))} must be the name of a file in the ZIP archive")
    if member:
        picked = [info for info in members if info.filename == member]
        if not picked:
            held = listed((info.filename for info in members), quoted=True) or "none"
            raise FileRejected(
                f"option member: the ZIP archive has no data file {_quote(member)}; its data files are {held}"
            )
        if len(picked) > 1:
            raise FileRejected(
                f"option member: the ZIP archive holds {len(picked):,} members named {_quote(member)}, "
                "so which one to import is unclear; re-create the archive with one"
            )
        info = picked[0]
    elif not members:
        raise FileRejected("the ZIP archive holds no data file (directories, __MACOSX/ and dot-files do not count)")
    elif len(members) > 1:
        names = listed((info.filename for info in members), quoted=True)
        raise FileRejected(
            f"the ZIP archive holds {len(members):,} data files ({names}); name the one to import with option member"
        )
    else:
        info = members[0]
    check_readable(info)
    return info


def check_readable(info: zipfile.ZipInfo) -> None:
    """Refuse a member this service cannot read: encrypted, or compressed other than by stored or deflate."""
    name = _quote(info.filename)
    if info.flag_bits & _ENCRYPTED or info.compress_type == _WINZIP_AES:
        raise FileRejected(
            f"the ZIP member {name} is encrypted, which cannot be read; import it from an archive without a password"
        )
    if info.compress_type not in _READ_METHODS:
        method = METHODS.get(info.compress_type)
        said = f"{method} (method {info.compress_type})" if method else f"method {info.compress_type}"
        raise FileRejected(
            f"the ZIP member {name} is compressed with {said}, which cannot be read; only stored and deflate "
            "members can (re-create the archive with deflate, the usual zip compression)"
        )


def open_member(fh: BinaryIO, info: zipfile.ZipInfo, limits: Limits) -> BinaryIO:
    """A forward-only reader (read, readable, close; no seek) of the member's decompressed bytes,
    within max_file_bytes and max_compression_ratio times its compressed bytes (see MemberReader);
    closing it leaves fh open."""
    check_readable(info)
    archive, directory = _open(fh)
    try:
        compressed = _compressed_size(info, directory)
        _check_declared(info, compressed, limits)
        try:
            stream = archive.open(info)
        except _ZIP_ERRORS as exc:
            raise _damaged(info.filename, exc) from exc
    except BaseException:
        archive.close()
        raise
    reader = MemberReader(stream, info.filename, limits, compressed=compressed, declared=info.file_size, owner=archive)
    return io.BufferedReader(reader, buffer_size=_BUFFER_BYTES)


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...

    def close(self) -> None: ...


class MemberReader(io.RawIOBase):
    """Decompressed bytes counted as they are given. A read fails (and gives nothing more) as
    soon as the count passes limits.max_file_bytes, or max_compression_ratio times the
    compressed bytes the member may span, or the declared size; at the end, a count short of
    the declared size fails too. zipfile's errors (bad CRC, corrupt deflate, an archive cut
    short) become FileRejected naming the member. Each read decompresses at most a MiB.

    open_member wraps it in a BufferedReader; any source with read(n) will do."""

    def __init__(
        self,
        source: _Readable,
        name: str,
        limits: Limits,
        *,
        compressed: int,
        declared: int | None = None,
        owner: zipfile.ZipFile | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._name = name
        self._limits = limits
        self._compressed = compressed
        self._declared = declared
        self._owner = owner  # closed with the reader
        self.given = 0  # decompressed bytes given so far
        self._failed: FileRejected | None = None  # raised again by every later read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(min(len(view), _PIECE_BYTES))
        view[: len(data)] = data
        return len(data)

    def _read(self, size: int) -> bytes:
        if self._failed is not None:
            raise self._failed
        if size <= 0:
            return b""
        try:
            try:
                data = self._source.read(size)
            except _ZIP_ERRORS as exc:
                raise _damaged(self._name, exc) from exc
            self.given += len(data)
            self._check(ended=not data)
        except FileRejected as exc:
            self._failed = exc
            raise
        return data

    def _check(self, *, ended: bool) -> None:
        given, limits, name, declared = self.given, self._limits, _quote(self._name), self._declared
        if given > limits.max_file_bytes:
            raise LimitExceeded(
                limit_text(f"the ZIP member {name} decompressed", "max_file_bytes", limits.max_file_bytes)
            )
        if given > limits.max_compression_ratio * self._compressed:
            raise LimitExceeded(
                f"the ZIP member {name} decompresses to more than {limits.max_compression_ratio:,} times its "
                f"{self._compressed:,} compressed bytes (the max_compression_ratio limit)"
            )
        if declared is not None and (given > declared or (ended and given < declared)):
            how = "more than" if given > declared else "only"
            raise FileRejected(
                f"the ZIP member {name} is damaged: it holds {how} {given:,} bytes, not the {declared:,} it declares"
            )

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._source.close()
        finally:
            if self._owner is not None:
                self._owner.close()
            super().close()


def _check_declared(info: zipfile.ZipInfo, compressed: int, limits: Limits) -> None:
    """Refuse at once a member that declares more than the limits allow: it fails either way
    (past a limit, or short of what it declares), and this way before any inflating."""
    name = _quote(info.filename)
    if info.file_size > limits.max_file_bytes:
        raise LimitExceeded(
            f"the ZIP member {name} declares {info.file_size:,} bytes decompressed, more than the "
            f"max_file_bytes limit ({human_size(limits.max_file_bytes)})"
        )
    if info.file_size > limits.max_compression_ratio * compressed:
        raise LimitExceeded(
            f"the ZIP member {name} declares {info.file_size:,} bytes decompressed from {compressed:,} compressed "
            f"bytes, more than {limits.max_compression_ratio:,} times as many (the max_compression_ratio limit)"
        )


def _compressed_size(info: zipfile.ZipInfo, directory: int) -> int:
    """The compressed bytes the member spans: its declared compressed size, which must end
    before the central directory (no member's data lies there or past it)."""
    if not 0 <= info.header_offset < directory or info.compress_size > directory - info.header_offset:
        raise FileRejected(
            f"the ZIP member {_quote(info.filename)} is damaged: its data runs past the archive's data "
            "(the archive is cut short or damaged)"
        )
    return info.compress_size


def _is_data(name: str) -> bool:
    """A data file's name: not a directory, nothing under __MACOSX/, no part starting with '.'."""
    if not name or name.endswith(("/", "\\")):
        return False
    parts = [part for part in re.split(r"[/\\]", name) if part not in ("", ".", "..")]
    return bool(parts) and not any(part == "__MACOSX" or part.startswith(".") for part in parts)


def _head(archive: zipfile.ZipFile, name: str, size: int) -> bytes:
    """The first size bytes of a member, or nothing when it cannot be read."""
    info = archive.getinfo(name)
    if info.flag_bits & _ENCRYPTED or info.compress_type not in _READ_METHODS:
        return b""
    try:
        with archive.open(info) as part:
            return part.read(size)
    except _ZIP_ERRORS:
        return b""


@contextmanager
def _opened(fh: BinaryIO) -> Iterator[tuple[zipfile.ZipFile, int]]:
    archive, directory = _open(fh)
    try:
        yield archive, directory
    finally:
        archive.close()


def _open(fh: BinaryIO) -> tuple[zipfile.ZipFile, int]:
    """The archive opened by zipfile once its end records pass the bounds, and where its central directory starts."""
    directory = _directory(fh)
    try:
        return zipfile.ZipFile(_Bounded(fh)), directory
    except _ZIP_ERRORS as exc:
        raise _invalid(_why(exc)) from exc


def _directory(fh: BinaryIO) -> int:
    """Find the end records as zipfile finds them, refuse a central directory past the bounds,
    and return where it starts."""
    size = fh.seek(0, os.SEEK_END)
    if size < _END.size:
        raise _invalid("it is too short to hold an end of central directory record")
    tail_at = max(size - (1 << 16) - _END.size, 0)
    fh.seek(tail_at)
    tail = _read(fh, size - tail_at)
    # zipfile takes the record at the very end when it has no comment, else the last signature.
    at = len(tail) - _END.size
    if not (tail.startswith(_END_SIG, at) and tail.endswith(b"\0\0")):
        at = tail.rfind(_END_SIG)
    if at < 0 or len(tail) - at < _END.size:
        raise _invalid("it has no end of central directory record (it is not a ZIP archive, or it is cut short)")
    _, _, _, _, entries, dir_size, _, _ = _END.unpack_from(tail, at)
    end = tail_at + at
    start = end - dir_size
    zip64 = _zip64(fh, end)
    if zip64 is not None:
        entries, dir_size = zip64
        start = end - _LOCATOR.size - _END64.size - dir_size
    if entries > MAX_MEMBERS:
        raise FileRejected(
            f"the ZIP archive declares {entries:,} entries, more than this service reads ({MAX_MEMBERS:,})"
        )
    if dir_size > MAX_DIRECTORY_BYTES:
        raise _too_large(dir_size)
    if start < 0:
        raise _invalid("its central directory would start before the file does")
    _count_entries(fh, start, dir_size)
    return start


def _zip64(fh: BinaryIO, end: int) -> tuple[int, int] | None:
    """The entry count and central directory size of the zip64 end record that zipfile reads
    (just before the locator, just before the end record), or None without one."""
    if end < _LOCATOR.size:
        return None
    fh.seek(end - _LOCATOR.size)
    signature, disk, offset, disks = _LOCATOR.unpack(_read(fh, _LOCATOR.size))
    if signature != _LOCATOR_SIG:
        return None
    if disk != 0 or disks > 1:
        raise _invalid("it spans several disks")
    record = end - _LOCATOR.size - _END64.size
    if record < 0:
        raise _invalid("its zip64 end record would start before the file does")
    fh.seek(record)
    signature, _, _, _, _, _, _, entries, dir_size, dir_offset = _END64.unpack(_read(fh, _END64.size))
    if signature != _END64_SIG:
        return None
    # The locator points at the record (from the archive's start, or the file's): a zip
    # reader that follows it must find this record and no other.
    if offset not in (dir_offset + dir_size, record):
        raise _invalid("its zip64 end records disagree")
    return entries, dir_size


def _count_entries(fh: BinaryIO, start: int, dir_size: int) -> None:
    """Count the entries zipfile will build from the central directory (it reads entries until
    dir_size bytes are used, whatever the end record counts), refusing more than MAX_MEMBERS."""
    fh.seek(start)
    data = _read(fh, dir_size)
    count = at = 0
    while at < dir_size and len(data) - at >= _ENTRY_BYTES and data.startswith(_ENTRY_SIG, at):
        count += 1
        if count > MAX_MEMBERS:
            raise FileRejected(f"the ZIP archive holds more than {MAX_MEMBERS:,} entries, more than this service reads")
        name, extra, comment = struct.unpack_from("<3H", data, at + 28)
        at += _ENTRY_BYTES + name + extra + comment


class _Bounded:
    """The archive as zipfile reads it: no read past MAX_DIRECTORY_BYTES, whatever the records
    it found say (zipfile's own reading of them may change with its version)."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._fh.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self._fh.seek(offset, whence)

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            here = self._fh.tell()
            size = self._fh.seek(0, os.SEEK_END) - here
            self._fh.seek(here)
        if size > MAX_DIRECTORY_BYTES:
            raise _too_large(size)
        return _read(self._fh, size)


def _read(fh: BinaryIO, size: int) -> bytes:
    """Up to size bytes, fewer only at the end of the file."""
    parts = []
    while size > 0:
        piece = fh.read(size)
        if not piece:
            break
        parts.append(piece)
        size -= len(piece)
    return b"".join(parts)


def _invalid(why: str) -> FileRejected:
    return FileRejected(f"not a valid ZIP archive: {why}")


def _too_large(size: int) -> FileRejected:
    return FileRejected(
        f"the ZIP archive's central directory is {human_size(size)}, more than this service reads "
        f"({human_size(MAX_DIRECTORY_BYTES)})"
    )


def _damaged(member: str, exc: BaseException) -> FileRejected:
    """A member zipfile could not read, in words naming it."""
    name, text = _quote(member), str(exc)
    if isinstance(exc, EOFError):
        return FileRejected(f"the ZIP member {name} is cut short: the archive ends inside its data")
    if isinstance(exc, zlib.error):
        return FileRejected(f"the ZIP member {name} is damaged: its deflate data is corrupt ({_why(exc)})")
    if text.startswith("Bad CRC-32"):
        return FileRejected(f"the ZIP member {name} is damaged: its data does not match its CRC-32 checksum")
    if text.startswith("File name in directory"):
        return FileRejected(f"the ZIP member {name} is damaged: its local header names another file")
    if text.startswith(("Bad magic number for file header", "Truncated file header")):
        return FileRejected(f"the ZIP member {name} is damaged: its local header is missing")
    return FileRejected(f"the ZIP member {name} cannot be read ({_why(exc)})")


def _quote(name: str) -> str:
    """A member's name for a message: clipped, and quoted so that no control character goes raw."""
    return repr(clip(name))


def _why(exc: BaseException) -> str:
    # clipped, control characters escaped: a library's message may quote names of any length
    text = str(exc) or type(exc).__name__
    return clip("".join(c if c.isprintable() else repr(c)[1:-1] for c in text), 200)
