"""Blob URIs -> confined blobs: customer C only ever reads under <blob_root>/<C>/, or (SPEC 17)
under s3://<bucket>/<prefix>/<C>/ of its S3 area."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from service.config import Config
from service.errors import BlobRefused
from service.sources import s3
from service.sources.s3 import S3Object

# A blob: a local file, or an S3 object (the format readers take either, see open_checked).
Blob = Path | S3Object

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def locate(uri: str, customer_id: str, config: Config) -> Blob:
    """The blob a file:// or s3:// URI names, refused (BlobRefused) unless it lies in the customer's area."""
    if isinstance(uri, str) and uri[:5].lower() == "s3://":
        settings = config.customer_settings.get(customer_id)
        return s3.parse(uri, customer_id, settings.s3 if settings else None)
    return resolve(uri, customer_id, config.blob_root)


def check(found: Blob, max_bytes: int) -> tuple[Blob, int, dict[str, Any]]:
    """Look at the blob without reading it: (the blob, pinned for an S3 object; its size; what
    identifies this version of it: the mtime of a file, the ETag of an object)."""
    if isinstance(found, S3Object):
        pinned = s3.stat(found, max_bytes)
        return pinned, pinned.size or 0, {"etag": pinned.etag}
    info = check_regular(found, max_bytes)
    return found, info.st_size, {"mtime_ns": info.st_mtime_ns}


def resolve(uri: str, customer_id: str, blob_root: Path) -> Path:
    """The real path a file:// URI names, refused unless it lies inside the customer's area."""
    if not isinstance(uri, str) or not uri:
        raise BlobRefused("blob_uri must be a non-empty string")
    parts = urlsplit(uri)
    if parts.scheme != "file":
        scheme = parts.scheme or "none"
        raise BlobRefused(f"blob_uri scheme {scheme!r} is not supported (use file:///absolute/path or s3://)")
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise BlobRefused("blob_uri must be file:// followed by an absolute path, without host, query or fragment")
    raw = unquote(parts.path)
    if not raw.startswith("/") or "\x00" in raw:
        raise BlobRefused("blob_uri must be file:// followed by an absolute path")
    area = os.path.realpath(blob_root / customer_id)
    real = os.path.realpath(raw)
    if not real.startswith(area + os.sep):
        raise BlobRefused(f"blob_uri is outside the blob area of customer {customer_id!r}")
    return Path(real)


def check_regular(path: Path, max_bytes: int) -> os.stat_result:
    """Stat the blob without opening it (a FIFO would block) and refuse anything but a regular file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise BlobRefused("no file at blob_uri") from None
    except OSError as exc:
        raise BlobRefused(f"cannot read the file at blob_uri ({exc.strerror})") from None
    kind = stat.S_IFMT(info.st_mode)
    if kind != stat.S_IFREG:
        raise BlobRefused(f"blob_uri names {_KINDS.get(kind, 'something')}, not a regular file")
    if info.st_size > max_bytes:
        raise BlobRefused(f"the file is {info.st_size} bytes, over the max_file_bytes limit ({max_bytes} bytes)")
    return info


def uri_for(path: Path) -> str:
    """The file:// URI of an absolute path."""
    return path.resolve().as_uri()
