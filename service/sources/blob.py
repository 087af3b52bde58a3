"""Blob URIs -> confined blobs: customer C only ever reads under <blob_root>/<C>/, or (SPEC 17)
under s3://<bucket>/<prefix>/<C>/ of its S3 area, or (SPEC 18) az://<container>/<prefix>/<C>/
of its Azure area, gs://<bucket>/<prefix>/<C>/ of its GCS area, or an https:// (http://) URL
under one of its url_prefixes.

The one interface the layers above use for every store: `locate` (URI -> blob, confined),
`check` (size and version, no read), `pin` (to the version a plan recorded), `open_blob` (a
binary reader) and `streamed` (whether that reader can only go front to back: an https file
whose server offers no ranges or no ETag); `upload` puts a local file into the customer's area
(`importctl enqueue --file`; not for https); `presign` answers a URL a client PUTs a file to
straight into the customer's S3, Azure or GCS area, and `begin_parts`, `put_part`,
`complete_parts` and `abort_parts` write one there in parts (SPEC 19). A store is one module of this package (`s3`,
`azure`, `gcs`, `http`); adding one means its URI scheme in `locate` and its branch in each of
these calls."""

from __future__ import annotations

import os
import shutil
import stat
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from service.config import Config
from service.errors import BlobRefused, FileRejected, LimitExceeded, RequestRefused
from service.sources import azure, gcs, http, ranged, s3
from service.sources.azure import AzureBlob
from service.sources.gcs import GcsObject
from service.sources.http import HttpObject
from service.sources.s3 import S3Object
from service.units import human_size

# A blob: a local file, an S3 object, an Azure blob, a GCS object or a file at an https URL (the
# format readers take any, see open_blob).
Blob = Path | S3Object | AzureBlob | GcsObject | HttpObject
# A blob whose version changed (or vanished) between the plan and a read fails its job with this.
CHANGED = ranged.CHANGED

# SPEC 19: a presigned upload URL is valid at most an hour.
PRESIGN_MAX_SECONDS = 3600
# The stores blob.presign signs for, as the "store" field names them, and as a sentence names them.
PRESIGN_STORES = {"s3": "S3", "azure": "Azure", "gcs": "GCS"}
MAX_FILENAME_CHARS = 200
# Dropped from an upload's name: controls, format characters (bidi overrides that disguise an
# extension), lone surrogates (no UTF-8 for them), line and paragraph separators.
_INVISIBLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def locate(uri: str, customer_id: str, config: Config) -> Blob:
    """The blob a file://, s3://, az://, gs:// or http(s):// URI names, refused (BlobRefused)
    unless it lies in the customer's area (or under its url_prefixes)."""
    if isinstance(uri, str) and uri[:8].lower().startswith(("http://", "https://")):
        return http.parse(uri, customer_id, config.customer_settings.get(customer_id))
    if isinstance(uri, str) and uri[:5].lower() == "s3://":
        settings = config.customer_settings.get(customer_id)
        return s3.parse(uri, customer_id, settings.s3 if settings else None)
    if isinstance(uri, str) and uri[:5].lower() == "az://":
        settings = config.customer_settings.get(customer_id)
        area = settings.azure if settings else None
        return azure.parse(uri, customer_id, area, config.azure_storage_connection_string)
    if isinstance(uri, str) and uri[:5].lower() == "gs://":
        settings = config.customer_settings.get(customer_id)
        return gcs.parse(uri, customer_id, settings.gcs if settings else None, config.storage_emulator_host)
    return resolve(uri, customer_id, config.blob_root)


def check(found: Blob, max_bytes: int) -> tuple[Blob, int, dict[str, Any]]:
    """Look at the blob without reading it: (the blob, pinned for an S3 object; its size; what
    identifies this version of it: the mtime of a file, the ETag of an object or Azure blob, the
    generation of a GCS object, HttpObject.version of an https file). An https file's size is 0
    when its server sends no Content-Length."""
    if isinstance(found, S3Object):
        pinned = s3.stat(found, max_bytes)
        return pinned, pinned.size or 0, {"etag": pinned.etag}
    if isinstance(found, AzureBlob):
        blob = azure.stat(found, max_bytes)
        return blob, blob.size or 0, {"etag": blob.etag}
    if isinstance(found, GcsObject):
        obj = gcs.stat(found, max_bytes)
        return obj, obj.size or 0, {"generation": obj.generation}
    if isinstance(found, HttpObject):
        checked = http.stat(found, max_bytes)
        return checked, checked.size or 0, checked.version()
    info = check_regular(found, max_bytes)
    return found, info.st_size, {"mtime_ns": info.st_mtime_ns}


def resolve(uri: str, customer_id: str, blob_root: Path) -> Path:
    """The real path a file:// URI names, refused unless it lies inside the customer's area."""
    if not isinstance(uri, str) or not uri:
        raise BlobRefused("blob_uri must be a non-empty string")
    parts = urlsplit(uri)
    if parts.scheme != "file":
        scheme = parts.scheme or "none"
        raise BlobRefused(
            f"blob_uri scheme {scheme!r} is not supported (use file:///absolute/path, https://, gs://, s3:// or az://)"
        )
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


def pin(found: Blob, plan: dict[str, Any]) -> Blob | None:
    """The blob pinned to the version the plan recorded, where the store can pin without a
    request (an S3 object or Azure blob by its ETag, a GCS object by its generation: every GET then
    names it; an https file by its ETag or Last-Modified, which its reader compares); None where
    it must be checked."""
    if isinstance(found, HttpObject):
        # A file read front to back has size 0 in the plan when its server sent no Content-Length.
        ranges, size = bool(plan.get("ranges")), plan.get("size")
        size = size if ranges else size or None
        return found.pinned(size, plan.get("etag"), ranges=ranges, last_modified=plan.get("last_modified"))
    if isinstance(found, (S3Object, AzureBlob)) and "etag" in plan:
        return found.pinned(plan["size"], plan["etag"])
    if isinstance(found, GcsObject) and "generation" in plan:
        return found.pinned(plan["size"], plan["generation"])
    return None


def open_blob(found: Blob, max_bytes: int | None, *, whole: bool = False) -> BinaryIO:
    """Open a blob for binary reading: a regular file (refusing FIFOs, devices, directories and
    files over max_bytes), or an object (ranged reads; whole: a temp copy, for a zip package).
    A streamed blob's reader is forward-only (seekable() is False), of one GET's body."""
    if isinstance(found, S3Object):
        return s3.open_object(found, max_bytes, whole)
    if isinstance(found, AzureBlob):
        return azure.open_blob(found, max_bytes, whole)
    if isinstance(found, GcsObject):
        return gcs.open_object(found, max_bytes, whole)
    if isinstance(found, HttpObject):
        return http.open_object(found, max_bytes, whole)
    # O_NONBLOCK so that opening a FIFO cannot hang; it changes nothing for regular files.
    fd = os.open(found, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRejected("the blob is not a regular file (a directory, a FIFO or a device)")
        if max_bytes is not None and info.st_size > max_bytes:
            raise LimitExceeded(
                f"the file has {info.st_size:,} bytes, more than the max_file_bytes limit ({human_size(max_bytes)})"
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def streamed(found: Blob) -> bool:
    """Whether the blob can only be read front to back, once per open (an https file whose server
    offers no byte ranges or no strong ETag, as check or pin found it); False for every other blob."""
    return isinstance(found, HttpObject) and not found.ranged


@dataclass(frozen=True, kw_only=True)
class Presigned:
    """Where and how a client uploads one file straight into the customer's area (SPEC 19): a
    `method` request to `url` sending `headers`, before `expires_at` (UTC); then `blob_uri` is
    what to enqueue."""

    url: str = field(repr=False)  # its signature lets anyone holding it write: never logged
    method: str = "PUT"
    headers: dict[str, str] = field(default_factory=dict)
    blob_uri: str
    expires_at: datetime


def presign(customer: str, filename: str, store: str, config: Config, expires_in: int = 3600) -> Presigned:
    """A URL the client can PUT a file to, for a new name under uploads/ of the customer's area in
    `store` ("s3", "azure" or "gcs"), valid for expires_in seconds (at most an hour; more is cut
    to an hour), and the blob_uri to enqueue once the file is there. Refused (RequestRefused,
    naming the field) for an unknown customer, a store it has no area in, or expires_in < 1;
    BlobRefused when the store's credentials cannot sign, BlobUnavailable when it cannot be reached."""
    if customer not in config.customers:
        raise RequestRefused(f"unknown customer {customer!r}", field="customer_id")
    if store not in PRESIGN_STORES:
        raise RequestRefused(
            f"store must be one of {', '.join(PRESIGN_STORES)}, not {str(store)[:40]!r}", field="store"
        )
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 1:
        raise RequestRefused("expires_in must be a whole number of seconds, at least 1", field="expires_in")
    if not isinstance(filename, str):
        raise RequestRefused("filename must be a string", field="filename")
    uri = _upload_uri(customer, store, filename, config)
    try:
        # The enqueue path's own confinement: what it would refuse is never signed.
        found = locate(uri, customer, config)
    except BlobRefused as exc:
        raise RequestRefused(f"the file name makes a name the store refuses ({exc})", field="filename") from None
    seconds = min(expires_in, PRESIGN_MAX_SECONDS)
    headers: dict[str, str] = {}
    if isinstance(found, S3Object):
        url, expires_at = s3.presign_put(found, seconds)
    elif isinstance(found, AzureBlob):
        url, headers, expires_at = azure.presign_put(found, seconds)
    elif isinstance(found, GcsObject):
        url, expires_at = gcs.presign_put(found, seconds)
    else:  # locate answers the store the URI's scheme names
        raise AssertionError(f"{store} URI located as {type(found).__name__}")
    return Presigned(url=url, headers=headers, blob_uri=found.uri, expires_at=expires_at)


def _upload_uri(customer: str, store: str, filename: str, config: Config) -> str:
    """The URI of a new blob under uploads/ of the customer's area in the store, named
    <12 hex>-<safe file name> as `upload` names its blobs; refused naming "store" without that area."""
    return f"{_area_uri(customer, store, config)}uploads/{uuid.uuid4().hex[:12]}-{upload_name(filename)}"


def upload_name(filename: str) -> str:
    """A client's file name made safe as the last segment of a blob name: its basename (after '/'
    or '\\'), without control or invisible characters, with '_' for '?' and '#' (a blob URI
    refuses them), without trailing dots and spaces (Azure drops trailing dots), at most 200
    characters; "upload" when nothing is left."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join("_" if c in "?#" else c for c in base if unicodedata.category(c) not in _INVISIBLE)
    return kept[:MAX_FILENAME_CHARS].rstrip(". ").strip() or "upload"


# A tus upload going straight to a store (SPEC 19) is sent in parts of PART_BYTES (S3's least
# but the last), more for a file too large for the store's count of parts: a request holds one
# part in memory, never the file.
PART_BYTES = 5 * 1024 * 1024
_MIB = 1024 * 1024


def begin_parts(customer: str, store: str, name: str, length: int, config: Config) -> dict[str, Any]:
    """Start a multipart upload of `length` bytes to uploads/<name> of the customer's `store` area
    ("s3", "azure" or "gcs": where its uploads setting sends a tus upload, SPEC 19): its state,
    which put_part, complete_parts and abort_parts take ("uri": the blob it makes; "part_bytes":
    the size of every part but the last; what else the store needs)."""
    if store not in PRESIGN_STORES:
        raise RequestRefused(f"customer {customer!r} has no {store} area to upload to", field="store")
    uri = f"{_area_uri(customer, store, config)}uploads/{name}"
    found = locate(uri, customer, config)
    module = _module(found)
    # Half the store's count of parts, so that requests cut off (their parts never named) and
    # restarts leave room; whole MiB.
    part_bytes = max(PART_BYTES, -(-length // (module.MAX_PARTS // 2) // _MIB) * _MIB)
    return {"uri": uri, "part_bytes": part_bytes, **module.begin_parts(found)}


def put_part(state: dict[str, Any], customer: str, config: Config, number: int, data: bytes) -> dict[str, Any]:
    """Upload part `number` of a multipart upload begin_parts started; what completing names it by."""
    found = locate(state["uri"], customer, config)
    return _module(found).put_part(found, state, number, data)  # type: ignore[no-any-return]


def complete_parts(state: dict[str, Any], customer: str, config: Config, parts: list[dict[str, Any]]) -> str:
    """Make the blob of these parts, in this order (parts put but not named are dropped); its URI."""
    found = locate(state["uri"], customer, config)
    _module(found).complete_parts(found, state, parts)
    return str(state["uri"])


def abort_parts(state: dict[str, Any], customer: str, config: Config) -> None:
    """Drop a multipart upload and its parts (dropped already: nothing to do)."""
    try:
        found = locate(state["uri"], customer, config)
    except BlobRefused:
        return  # outside the area (the configuration changed): not ours to delete
    _module(found).abort_parts(found, state)


def without_last(found: Blob, count: int) -> Blob:
    """An S3 object, Azure blob or GCS object whose name is found's without its last `count`
    characters (a name prefix, for listing)."""
    if isinstance(found, S3Object):
        return replace(found, key=found.key[:-count])
    if isinstance(found, AzureBlob):
        return replace(found, path=found.path[:-count])
    if isinstance(found, GcsObject):
        return replace(found, name_in_bucket=found.name_in_bucket[:-count])
    raise AssertionError(f"no name prefix of {type(found).__name__}")


def list_under(prefix: Blob) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Every object of an S3, Azure or GCS prefix (without_last), in key order, a page at a
    time: (the object pinned to its version, that version as `check` names it)."""
    return _module(prefix).list_prefix(prefix)  # type: ignore[no-any-return]


def copy(found: Blob, target: Blob) -> None:
    """Copy an S3 object, Azure blob or GCS object (the version it is pinned to) to target, of
    the same store."""
    if type(found) is not type(target):
        raise BlobRefused(f"cannot copy {type(found).__name__} to {type(target).__name__}")
    _module(found).copy(found, target)


def _module(found: Blob) -> Any:
    """The store module of an S3, Azure or GCS blob."""
    if isinstance(found, S3Object):
        return s3
    if isinstance(found, AzureBlob):
        return azure
    if isinstance(found, GcsObject):
        return gcs
    raise AssertionError(f"no multipart upload to {type(found).__name__}")


def _area_uri(customer: str, store: str, config: Config) -> str:
    """The URI prefix of the customer's area in the store ("s3", "azure" or "gcs"), ending in /."""
    settings = config.customer_settings.get(customer)
    if store == "s3" and settings is not None and settings.s3 is not None:
        return f"{s3.SCHEME}{settings.s3.bucket}/{s3.area_prefix(settings.s3, customer)}"
    if store == "azure" and settings is not None and settings.azure is not None:
        return f"{azure.SCHEME}{settings.azure.container}/{azure.area_prefix(settings.azure, customer)}"
    if store == "gcs" and settings is not None and settings.gcs is not None:
        return f"{gcs.SCHEME}{settings.gcs.bucket}/{gcs.area_prefix(settings.gcs, customer)}"
    raise RequestRefused(f"customer {customer!r} has no {PRESIGN_STORES[store]} area to upload to", field="store")


def delete(uri: str, customer: str, config: Config) -> None:
    """Delete a blob of the customer's area (a finished upload past its retention); one that is
    gone already is no error. BlobUnavailable when its store cannot be reached."""
    try:
        found = locate(uri, customer, config)
    except BlobRefused:
        return  # outside the area (the configuration changed): not ours to delete
    if isinstance(found, Path):
        found.unlink(missing_ok=True)
    elif isinstance(found, S3Object):
        s3.delete(found)
    elif isinstance(found, AzureBlob):
        azure.delete(found)
    elif isinstance(found, GcsObject):
        gcs.delete(found)


def delete_found(found: Blob) -> None:
    """Delete a located blob (a file, an object) of the customer's area; gone already is no error."""
    if isinstance(found, Path):
        found.unlink(missing_ok=True)
    else:
        _module(found).delete(found)


def upload(source: Path, customer: str, config: Config) -> str:
    """Copy a local file under <blob_root>/<customer>/uploads/ (or upload it under uploads/ of the
    customer's S3 area, else of its Azure area, else of its GCS area) and return its URI."""
    if customer not in config.customers:
        raise RequestRefused(f"unknown customer {customer!r}", field="customer_id")
    if not source.is_file():
        raise RequestRefused(f"{source} is not a readable regular file", field="file")
    settings = config.customer_settings.get(customer)
    if settings is not None and settings.s3 is not None:
        # SPEC 17: a customer with an S3 area imports from there; its workers may run elsewhere.
        with source.open("rb") as fh:
            return s3.upload(fh, settings.s3, customer, f"{uuid.uuid4().hex[:12]}-{upload_name(source.name)}").uri
    if settings is not None and settings.azure is not None:
        with source.open("rb") as fh:
            name = f"{uuid.uuid4().hex[:12]}-{upload_name(source.name)}"
            return azure.upload(fh, settings.azure, customer, name, config.azure_storage_connection_string).uri
    if settings is not None and settings.gcs is not None:
        with source.open("rb") as fh:
            name = f"{uuid.uuid4().hex[:12]}-{upload_name(source.name)}"
            return gcs.upload(fh, settings.gcs, customer, name, config.storage_emulator_host).uri
    target_dir = config.blob_root / customer / "uploads"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{uuid.uuid4().hex[:12]}-{upload_name(source.name)}"
    shutil.copyfile(source, target)
    return uri_for(target)
