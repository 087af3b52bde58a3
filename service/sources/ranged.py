"""What every remote store shares: a seekable reader whose reads are ranged requests pinned to
one version of the object, and the temp copy a whole-file reader (an XLSX package) needs.

A store supplies one function, `fetch(start, length) -> bytes`, which asks for that range with
its version precondition (S3 and Azure If-Match on the ETag, GCS ifGenerationMatch) and raises
the service's errors. A short answer means another object now stands at the name.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

from service.errors import FileRejected, LimitExceeded

# Bytes one GET asks for: what a chunk may read past its own range.
READ_BYTES = 1024 * 1024
# Bytes a GET from the very start asks for: every reader (each chunk's too) first sniffs the
# BOM there, and one full read's worth per chunk would be wasted.
HEAD_BYTES = 64 * 1024
# A blob whose version changed (or that shrank) between the plan and a read fails its job with this.
CHANGED = "the file changed while it was being imported; enqueue it again"

Fetch = Callable[[int, int], bytes]


def open_ranged(size: int, fetch: Fetch, max_bytes: int | None, whole: bool = False) -> BinaryIO:
    """A seekable binary reader of `size` bytes read through `fetch` as it is read (whole: a temp
    copy, for a zip package, removed when closed); refused over max_bytes."""
    if max_bytes is not None and size > max_bytes:
        raise LimitExceeded(f"the file has {size:,} bytes, more than the max_file_bytes limit ({max_bytes:,} bytes)")
    reader = io.BufferedReader(RangeReader(size, fetch), buffer_size=READ_BYTES)
    return temp_copy(reader, "import-xlsx-") if whole else reader


def temp_copy(reader: BinaryIO, prefix: str) -> BinaryIO:
    """A seekable temp copy of what reader gives (closed after), removed when the copy is closed."""
    copy = tempfile.TemporaryFile(prefix=prefix)
    try:
        with reader:
            while block := reader.read(READ_BYTES * 8):
                copy.write(block)
        copy.seek(0)
        return copy
    except BaseException:
        copy.close()
        raise


class SizedReader(io.RawIOBase):
    """A raw reader of a known number of bytes that seeks anywhere (past the end, reads give
    nothing); a subclass reads from self._pos in readinto."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos


class RangeReader(SizedReader):
    """The bytes of one object: each readinto is one fetch of its range (the first at most HEAD_BYTES)."""

    def __init__(self, size: int, fetch: Fetch) -> None:
        super().__init__(size)
        self._fetch = fetch

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._size - self._pos, HEAD_BYTES if self._pos == 0 else len(view))
        if wanted <= 0:
            return 0
        data = self._fetch(self._pos, wanted)
        if len(data) != wanted:
            raise FileRejected(CHANGED)  # the object is shorter than planned: another one
        view[:wanted] = data
        self._pos += wanted
        return wanted
