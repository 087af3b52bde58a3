"""What a feed watches (SPEC 20): a folder of the blob root or a name prefix of a customer's
S3, Azure or GCS area, confined like every blob (blob.locate), listed in key order a page at a
time, and the files it imported moved elsewhere in the same area."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from service.config import Config
from service.errors import BlobRefused
from service.sources import blob
from service.sources.blob import Blob, uri_for


def locate(prefix_uri: str, customer_id: str, config: Config) -> Blob:
    """The folder (a directory of the blob root) or name prefix (S3, Azure, GCS) a feed watches,
    refused (BlobRefused) unless it lies in the customer's area; its name ends in '/' (a
    prefix), a directory's path is its real path."""
    if not isinstance(prefix_uri, str) or not prefix_uri:
        raise BlobRefused("prefix_uri must be a non-empty string")
    if prefix_uri[:8].lower().startswith(("http://", "https://")):
        raise BlobRefused("a feed watches a file://, s3://, az:// or gs:// prefix, not a web address")
    probe = blob.locate(prefix_uri.rstrip("/") + "/x", customer_id, config)  # the area's own confinement
    return probe.parent if isinstance(probe, Path) else blob.without_last(probe, 1)


def uri_of(prefix: Blob) -> str:
    """The URI of a prefix `locate` found, ending in "/"."""
    return uri_for(prefix) + "/" if isinstance(prefix, Path) else uri_of_blob(prefix)


def uri_of_blob(found: Blob) -> str:
    """The URI of a blob `listing` found."""
    if isinstance(found, Path):
        return found.as_uri()  # listed from the prefix's real path, never through a link: real already
    uri: str = cast(Any, found).uri  # an S3 object, Azure blob or GCS object (never a web address)
    return uri


def listing(prefix: Blob) -> Iterator[tuple[Blob, str, int, dict[str, Any]]]:
    """Every blob under a prefix (`locate`), in key order, read a page at a time (never the
    whole listing at once): (the blob pinned to its version, its name below the prefix, its size,
    that version as blob.check names it). Names with a segment starting with '.' are left out:
    dot files, the parts of uploads still arriving, a file being written under a temporary name.
    In the blob root: regular files only, never through a symbolic link."""
    if isinstance(prefix, Path):
        for path, info in _walk(prefix):
            yield path, path.relative_to(prefix).as_posix(), info.st_size, {"mtime_ns": info.st_mtime_ns}
        return
    start = len(uri_of(prefix))
    for found, version in read_ahead(blob.list_under(prefix)):
        name = found.uri[start:]
        if name and not any(segment.startswith(".") or not segment for segment in name.split("/")):
            yield found, name, found.size or 0, version


READ_AHEAD_ITEMS = 1000  # listed objects handed over at once (one S3 or GCS page)
READ_AHEAD_BATCHES = 2  # batches listed ahead of the run, at most


def read_ahead(items: Iterable[Any], batch: int = READ_AHEAD_ITEMS, depth: int = READ_AHEAD_BATCHES) -> Iterator[Any]:
    """The items of a store's listing, listed by a helper thread while the run checks the ones
    before them: the next page's round trip overlaps the ledger's work on this one, instead of
    adding to it. At most `depth` batches of `batch` items wait (memory stays bounded); an error
    of the listing is raised where its item would have come; a consumer that stops early stops
    the helper at its next batch."""
    handed: queue.Queue[tuple[list[Any], BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand(items_: list[Any], error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                handed.put((items_, error), timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        chunk: list[Any] = []
        try:
            for item in items:
                chunk.append(item)
                if len(chunk) >= batch:
                    if not hand(chunk):
                        return
                    chunk = []
        except BaseException as exc:  # handed to the consumer, raised there
            hand(chunk, exc)
            return
        if hand(chunk):
            hand([], StopIteration())

    helper = threading.Thread(target=produce, name="feed-listing", daemon=True)
    helper.start()
    try:
        while True:
            chunk, error = handed.get()
            yield from chunk
            if isinstance(error, StopIteration):
                return
            if error is not None:
                raise error
    finally:
        stop.set()  # the helper ends at its next hand-over (a page being fetched is let finish)


def _walk(directory: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """The regular files under a directory, in the order of their paths as strings (one
    directory's names at a time)."""
    try:
        # A folder's names sort as if they ended in '/': "a.csv" before "a/x.csv", as an S3
        # listing puts their keys.
        entries = sorted(
            os.scandir(directory),
            key=lambda entry: entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name,
        )
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:  # a folder the workers may not read: the run stops naming it
        raise BlobRefused(f"cannot list the folder {uri_for(directory)} ({exc.strerror})") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            yield Path(entry.path), entry.stat(follow_symlinks=False)


def move(found: Blob, target_uri: str, customer: str, config: Config) -> str:
    """Move a blob (the version it is pinned to) to target_uri in the customer's area of the
    same store: its new URI."""
    target = blob.locate(target_uri, customer, config)
    if isinstance(found, Path) and isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(found, target)
        return uri_for(target)
    blob.copy(found, target)
    blob.delete_found(found)
    return target_uri
