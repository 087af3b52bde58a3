"""Blob URIs -> confined local paths: customer C only ever reads under <blob_root>/<C>/."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

from service.errors import BlobRefused

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def resolve(uri: str, customer_id: str, blob_root: Path) -> Path:
    """The real path a file:// URI names, refused unless it lies inside the customer's area."""
    if not isinstance(uri, str) or not uri:
        raise BlobRefused("blob_uri must be a non-empty string")
    parts = urlsplit(uri)
    if parts.scheme != "file":
        scheme = parts.scheme or "none"
        raise BlobRefused(f"blob_uri scheme {scheme!r} is not supported (use file:///absolute/path)")
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
