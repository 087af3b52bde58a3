"""What a feed watches (SPEC 20): a folder of the blob root or a name prefix of a customer's
S3, Azure or GCS area, confined like every blob (blob.locate), listed in key order a page at a
time, and the files it imported moved elsewhere in the same area."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    for found, version in blob.list_under(prefix):
        name = found.uri[start:]
        if name and not any(segment.startswith(".") or not segment for segment in name.split("/")):
            yield found, name, found.size or 0, version


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
