"""Files read once, front to back (a compressed file, a ZIP member, an https body served without
ranges): how the readers see them, and how each chunk keeps its bytes.

Such a file cannot be entered in the middle, so a chunk could only get its bytes by reading the
file again from the top. Instead the planning scan, the one full read, hands each chunk its own
bytes (`Spool` keeps what lies between two cuts), compressed with zstd, to be stored in the
customer's database with the chunk, where any worker on any machine reads them back
(`Window`). A chunk holds at most about CHUNK_BYTES of text, so neither side ever holds more
than a chunk; no temp file has to be shared between workers, and nothing is left on disk.
"""

from __future__ import annotations

import io
import struct
from typing import Any, BinaryIO

import zstandard

from service.sources.ranged import SizedReader
from service.units import MIB

# Text a stored chunk holds at most (a record more, the last one that passes it).
CHUNK_BYTES = 8 * MIB
# Bytes of a file's top kept for the whole read: the BOM, the header, a reader's first look.
HEAD_BYTES = 64 * 1024
# Bytes behind the read position a reader may seek back to, when no one keeps a chunk.
BACK_BYTES = 1 * MIB
_FILL = 256 * 1024
_PAYLOAD = struct.Struct("<4sBQ")  # magic, length of the head, position of the bytes
_MAGIC = b"SPL1"
_LEVEL = 1  # zstd level: ~4x smaller for CSV text at several hundred MB/s


class Spool:
    """A seekable view of a forward-only stream: its top (HEAD_BYTES) always, and what lies
    after the kept position (`keep`), or else the last BACK_BYTES read. Reads are served from
    what is kept and read on from the stream; a seek before what is kept is a bug (ValueError).
    Its size is unknown until its end is reached: `seek(0, SEEK_END)` is not supported.
    Closing it closes the stream, then owner (what the stream is read from, when closing the
    stream leaves it open: a ZIP archive's file under its member)."""

    def __init__(self, stream: BinaryIO, owner: BinaryIO | None = None) -> None:
        self._stream = stream
        self._owner = owner
        self._head = b""
        self._buf = bytearray()  # the bytes [self._base, self._base + len(self._buf))
        self._base = 0
        self._pos = 0
        self._eof = False
        self._kept: int | None = None  # keep(): the first position that must stay readable
        self.closed = False

    # What a binary file offers the readers.
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a file read once has no known end to seek from")
        if offset < 0:
            raise ValueError("negative seek position")
        self._pos = offset
        return offset

    def read(self, size: int | None = -1) -> bytes:
        pos = self._pos
        if pos < len(self._head) and pos < self._base:
            data = self._head[pos : pos + (len(self._head) if size is None or size < 0 else size)]
            self._pos += len(data)
            return data
        if pos < self._base:
            raise ValueError(f"position {pos} of a file read once was let go (kept from {self._base})")
        want = None if size is None or size < 0 else size
        self._fill(None if want is None else pos + want)
        start = pos - self._base
        end = len(self._buf) if want is None else min(len(self._buf), start + want)
        data = bytes(self._buf[start:end])
        self._pos += len(data)
        self._trim()
        return data

    def readline(self, size: int | None = -1) -> bytes:
        parts = []
        total = 0
        while size is None or size < 0 or total < size:
            block = self.read(4096 if size is None or size < 0 else min(4096, size - total))
            if not block:
                break
            cut = block.find(b"\n")
            if cut >= 0:
                self._pos -= len(block) - cut - 1
                parts.append(block[: cut + 1])
                break
            parts.append(block)
            total += len(block)
        return b"".join(parts)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._buf = bytearray()
            try:
                self._stream.close()
            finally:
                if self._owner is not None:
                    self._owner.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # What a planning scan uses.
    def keep(self, position: int) -> None:
        """Keep every byte from position on readable (until the next keep), let go of those before."""
        self._kept = position
        self._trim()

    def between(self, start: int, end: int | None) -> bytes:
        """The bytes [start, end) (end None: to the end of the file), which must still be kept."""
        if start < self._base:
            raise ValueError(f"position {start} of a file read once was let go (kept from {self._base})")
        self._fill(end)
        stop = len(self._buf) if end is None else end - self._base
        return bytes(self._buf[start - self._base : stop])

    @property
    def head(self) -> bytes:
        """The file's first bytes (up to HEAD_BYTES, once read)."""
        if self._base == 0:
            self._fill(HEAD_BYTES)
        return self._head

    def _fill(self, upto: int | None) -> None:
        """Read on until the bytes before upto (None: all of them) are held, or the end."""
        while not self._eof and (upto is None or self._base + len(self._buf) < upto):
            block = self._stream.read(_FILL)
            if not block:
                self._eof = True
                break
            self._buf += block
            if self._base == 0 and len(self._head) < HEAD_BYTES:  # nothing let go yet
                self._head = bytes(self._buf[:HEAD_BYTES])
            self._trim()  # a read far ahead holds no more than it must

    def _trim(self) -> None:
        """Let go of what no one may seek back to."""
        floor = self._kept if self._kept is not None else self._pos - BACK_BYTES
        drop = min(floor, self._pos) - self._base
        if drop > _FILL:
            del self._buf[:drop]
            self._base += drop


def encode(head: bytes, start: int, data: bytes) -> bytes:
    """A stored chunk: the file's first bytes (its BOM) and the bytes from position start on."""
    raw = _PAYLOAD.pack(_MAGIC, len(head), start) + head + data
    return zstandard.ZstdCompressor(level=_LEVEL).compress(raw)


class Window(SizedReader):
    """A stored chunk read as the file it was cut from: the head at position 0, the chunk's
    bytes where they were, the end of the file right after them. Reading a position that was
    not stored is a bug (ValueError)."""

    def __init__(self, payload: bytes) -> None:
        raw = zstandard.ZstdDecompressor().decompress(payload)
        magic, head_len, start = _PAYLOAD.unpack_from(raw)
        if magic != _MAGIC:
            raise ValueError("not a stored chunk")
        self._raw = memoryview(raw)
        self._head_end = _PAYLOAD.size + head_len
        self._start = start
        super().__init__(start + len(raw) - self._head_end)  # the file ends after the chunk

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        pos, head = self._pos, self._head_end - _PAYLOAD.size
        if pos >= self._size:
            return 0
        if pos < head and pos < self._start:
            begin, stop = _PAYLOAD.size + pos, self._head_end
        elif pos >= self._start:
            begin, stop = self._head_end + pos - self._start, len(self._raw)
        else:
            raise ValueError(f"position {pos} is not in the stored chunk ({self._start}-{self._size})")
        count = min(len(view), stop - begin)
        view[:count] = self._raw[begin : begin + count]
        self._pos += count
        return count


def open_window(payload: bytes) -> BinaryIO:
    """A stored chunk as a buffered binary file (see Window)."""
    return io.BufferedReader(Window(payload), buffer_size=64 * 1024)
