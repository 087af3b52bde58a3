"""An upload's bytes while they arrive (SPEC 19), and the file they make once they all have.

While it arrives, an upload lives at `<blob_root>/.uploads/<customer>/<id>`: outside every
customer's area (a customer id never starts with a dot), so no job can read a file that is
still coming in. Once complete it moves (one rename, same file system) into the customer's
own area, `<blob_root>/<customer>/uploads/<id>-<filename>`, where `importctl enqueue --file`
puts files too, and is imported from there like any other file.

Bytes are written in pieces of at most PIECE_BYTES: however large the upload and however many
arrive at once, a process holds one piece per request. One request writes an upload at a time
(an exclusive lock on its file); another one meanwhile is told the upload is busy.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from service.errors import ImportServiceError
from service.sources.blob import upload_name

PIECE_BYTES = 1024 * 1024  # read from the request and written at once


class UploadBusy(ImportServiceError):
    """Another request is writing this upload right now."""


def part_path(blob_root: Path, customer_id: str, upload_id: str) -> Path:
    """Where an unfinished upload's bytes are."""
    return blob_root / ".uploads" / customer_id / upload_id


def final_path(blob_root: Path, customer_id: str, upload_id: str, filename: str) -> Path:
    """Where a finished upload's file is: in the customer's area, under uploads/."""
    return blob_root / customer_id / "uploads" / f"{upload_id}-{upload_name(filename)}"


def create(blob_root: Path, customer_id: str, upload_id: str) -> None:
    """Create the empty file an upload's bytes go to."""
    path = part_path(blob_root, customer_id, upload_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class Writer:
    """Appends a request's bytes to an upload's file, counting (and hashing) what it wrote."""

    def __init__(self, fh: BinaryIO, start: int, algorithm: str | None) -> None:
        self._fh = fh
        self.start = start
        self.written = 0
        self._hash = hashlib.new(algorithm) if algorithm else None

    def write(self, piece: bytes) -> None:
        self._fh.write(piece)
        self.written += len(piece)
        if self._hash is not None:
            self._hash.update(piece)

    def digest(self) -> bytes:
        """The digest of every byte written (for a checksum extension request)."""
        assert self._hash is not None
        return self._hash.digest()

    def sync(self) -> None:
        """Make what was written durable (before it is counted as stored)."""
        self._fh.flush()
        os.fdatasync(self._fh.fileno())

    def discard(self, keep: int | None = None) -> None:
        """Cut away what this request wrote past `keep` (default: all of it; never below what
        was counted as stored, which the caller passes)."""
        keep = self.start if keep is None else keep
        self._fh.flush()
        self._fh.truncate(keep)
        self._fh.seek(keep)
        self.written = keep - self.start


@contextmanager
def writing(
    blob_root: Path, customer_id: str, upload_id: str, offset: int, algorithm: str | None = None
) -> Iterator[Writer]:
    """A Writer appending at offset, the upload's stored count: bytes on disk past it (a
    request cut off before they were counted) are cut away first. Raises UploadBusy while
    another request writes the same upload, FileNotFoundError when its file is gone."""
    path = part_path(blob_root, customer_id, upload_id)
    with path.open("r+b", buffering=0) as raw:
        try:
            fcntl.flock(raw.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadBusy("another request is writing this upload; try again when it ends") from None
        size = os.fstat(raw.fileno()).st_size
        if size < offset:  # fdatasync comes before a count: only a lost disk could do this
            raise OSError(f"upload {upload_id} has {size:,} bytes on disk but {offset:,} counted")
        if size > offset:
            raw.truncate(offset)
        raw.seek(offset)
        yield Writer(raw, offset, algorithm)  # type: ignore[arg-type]


def complete(blob_root: Path, customer_id: str, upload_id: str, filename: str) -> Path:
    """Move a finished upload's file into the customer's area; its new path."""
    source = part_path(blob_root, customer_id, upload_id)
    target = final_path(blob_root, customer_id, upload_id, filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    return target


def remove(blob_root: Path, customer_id: str, upload_id: str) -> None:
    """Delete an unfinished upload's bytes (absent already: nothing to do)."""
    part_path(blob_root, customer_id, upload_id).unlink(missing_ok=True)


def read_pieces(read: Callable[[int], bytes], count: int | None) -> Iterator[bytes]:
    """A request body in pieces of at most PIECE_BYTES: `count` bytes (None: until it ends).
    A read that fails (the client went away) ends the pieces as the body's end would: the
    caller sees fewer than `count`."""
    left = count
    while left is None or left > 0:
        try:
            piece = read(PIECE_BYTES if left is None else min(PIECE_BYTES, left))
        except OSError:
            return
        if not piece:
            return
        if left is not None:
            left -= len(piece)
        yield piece
