"""Compressed files (SPEC 18): gzip, bzip2, xz and zstd, known by their magic bytes, read as a
stream of their decompressed bytes that counts what it gives against the limits.

A compressed stream cannot be entered in the middle, so it is read once, front to back (see
spool.py for how its chunks are kept). Every decompressor here is asked for a bounded number
of bytes at a time, so a bomb is stopped by the count as soon as it passes a limit, never
after it was inflated: the decompressed bytes count against max_file_bytes, and against
max_compression_ratio times the compressed size.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from typing import Any, BinaryIO

import zstandard

from service.errors import FileRejected, LimitExceeded
from service.formats.limits import Limits
from service.units import MIB, human_size

# Magic bytes -> compression (the name is never trusted: users.csv.gz may be plain text).
MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
KINDS = tuple(kind for _, kind in MAGIC)
# Name suffixes dropped to find the inner name (users.csv.gz is read as users.csv).
SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
READ_BYTES = 256 * 1024  # compressed bytes read at a time
# The most memory one stream's decoder may take: an xz dictionary or a zstd window, whatever the
# file declares (xz -9 needs 65 MiB, zstd -19 8 MiB; a crafted header may ask for 4 GiB).
DECODER_MEMORY = 128 * MIB
ZSTD_WINDOW = 64 * MIB


def sniff(head: bytes) -> str:
    """The compression the first bytes show ('' for none)."""
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return "" if kind == "bzip2" and not head[3:4].isdigit() else kind
    return ""


def inner_name(name: str, compression: str) -> str:
    """The name a compressed file's content goes by: users.csv.gz -> users.csv."""
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and SUFFIXES.get("." + suffix.lower()) == compression:
        return stem
    return name


def open_stream(raw: BinaryIO, compression: str, compressed_size: int, limits: Limits, what: str) -> BinaryIO:
    """A forward-only reader of raw's decompressed bytes, counted against the limits (what: the
    file's name in messages, e.g. "the file" or "member 'a.csv'"; compressed_size 0: unknown,
    the ratio then counts the compressed bytes read so far)."""
    if compression not in KINDS:
        raise ValueError(f"unknown compression {compression!r}")
    return io.BufferedReader(Decompressed(raw, compression, compressed_size, limits, what), READ_BYTES)


class Decompressed(io.RawIOBase):
    """The decompressed bytes of a gzip, bzip2, xz or zstd stream (concatenated members and
    frames included), a bounded amount per read, every byte counted against the limits."""

    def __init__(self, raw: BinaryIO, compression: str, compressed_size: int, limits: Limits, what: str) -> None:
        super().__init__()
        self._raw = raw
        self._kind = compression
        self._what = what
        self._max = limits.max_file_bytes
        self._ratio = limits.max_compression_ratio
        self._compressed = compressed_size  # 0: unknown (a body served without ranges)
        self._count = 0
        self._raw_count = 0  # compressed bytes read so far
        self._decoder: Any = _decoder(compression)
        self._pending = b""  # compressed bytes read but not yet given to the decoder
        self._raw_eof = False
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._done:
            data = self._step(len(view))
            if data:
                self._count += len(data)
                self._check()
                view[: len(data)] = data
                return len(data)
        return 0

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()

    def _step(self, size: int) -> bytes:
        """Decompress at most size bytes (b'' while the decoder only took input)."""
        decoder = self._decoder
        if decoder.eof:
            rest = self._pending or decoder.unused_data
            self._pending = b""
            if not rest:
                rest = self._read_raw()
            if not rest:
                self._done = True
                return b""
            if self._kind == "gzip" and not rest.startswith(b"\x1f\x8b"):
                if rest.strip(b"\x00") or self._read_raw().strip(b"\x00"):
                    raise FileRejected(f"{self._what} has data after the end of its gzip stream that is not gzip")
                self._done = True  # zero padding after the last member (tar, some tape writers)
                return b""
            self._decoder = decoder = _decoder(self._kind)
            self._pending = rest
        if not self._pending and _needs_input(decoder):
            self._pending = self._read_raw()
            if not self._pending:
                raise FileRejected(f"{self._what} is truncated: its {self._kind} data ends before the stream does")
        try:
            data, self._pending = _decompress(decoder, self._pending, size)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
            raise FileRejected(f"{self._what} is not valid {self._kind} data ({_reason(exc)})") from None
        return data

    def _read_raw(self) -> bytes:
        if self._raw_eof:
            return b""
        data = self._raw.read(READ_BYTES)
        if not data:
            self._raw_eof = True
        self._raw_count += len(data or b"")
        return data or b""

    def _check(self) -> None:
        if self._count > self._max:
            raise LimitExceeded(
                f"{self._what} decompresses to more than the max_file_bytes limit ({human_size(self._max)})"
            )
        # The whole file's compressed size, or where it is not known, what was read of it so far.
        if self._count > self._ratio * max(self._compressed, self._raw_count, 1):
            raise LimitExceeded(
                f"{self._what} decompresses to more than {self._ratio} times its compressed size, "
                f"the max_compression_ratio limit ({self._ratio})"
            )


def _decoder(kind: str) -> Any:
    if kind == "gzip":
        return _Zlib()
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=DECODER_MEMORY)
    return _Zstd()


def _needs_input(decoder: Any) -> bool:
    return bool(decoder.needs_input)


def _decompress(decoder: Any, data: bytes, size: int) -> tuple[bytes, bytes]:
    """(at most size decompressed bytes, the input not consumed yet)."""
    if isinstance(decoder, (_Zlib, _Zstd)):
        return decoder.decompress(data, size)
    out = decoder.decompress(data, size)
    # bz2/lzma keep unconsumed input inside; needs_input says when to feed more.
    return out, b""


class _Zlib:
    """gzip through zlib, one member: decompress(data, size) -> (output, unconsumed input)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes, size: int) -> tuple[bytes, bytes]:
        out = self._d.decompress(data, size)
        rest = self._d.unconsumed_tail
        self.needs_input = not rest and not self._d.eof
        return out, rest


class _Zstd:
    """zstd through zstandard, one frame: decompress(data, size) -> (output, unconsumed input).

    zstandard's decompressobj cannot bound its output (its stream_reader can, but does not see
    a truncated frame), so input is fed FEED bytes at a time: a zstd block header takes 3 bytes
    and gives at most 128 KiB, so one feed never gives more than a few MiB."""

    FEED = 256

    def __init__(self) -> None:
        self._d = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW).decompressobj()
        self._out = b""
        self._after = b""  # input past the frame's end that was never fed to it
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return bool(self._d.eof) and not self._out

    @property
    def unused_data(self) -> bytes:
        return bytes(self._d.unused_data) + self._after

    def decompress(self, data: bytes, size: int) -> tuple[bytes, bytes]:
        parts, have, rest, feed = [self._out], len(self._out), memoryview(data), self.FEED
        while have < size and rest and not self._d.eof:
            piece = self._d.decompress(rest[:feed])
            rest = rest[feed:]
            parts.append(piece)
            have += len(piece)
        out = b"".join(parts)
        left = bytes(rest)
        if self._d.eof:  # after the frame: unused_data carries it
            self._after, left = left, b""
        self._out, out = out[size:], out[:size]
        self.needs_input = not left and not self._out and not self._d.eof
        return out, left


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text[:200] if text else type(exc).__name__
