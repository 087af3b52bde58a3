"""Files handed to the service itself (SPEC 19), whatever the protocol that carries them (tus
at REST's /uploads): create an upload, store its bytes as they come, finish it into a file of
the customer's area that jobs import, delete it, and sweep the expired and the old.

An upload's stored count (`received`) moves only after the bytes under it are durable, and
only from the count the request started at: a request cut off keeps what it wrote (unless a
checksum covered the whole request: then nothing), two requests racing for one upload cannot
both count, and a process killed mid-request loses only what it had not counted.

Where the customer's "uploads" setting names its S3, Azure or GCS area, the bytes go straight
there as the parts of a multipart upload (blob.put_part), each part counted once the store has
it; the counted bytes of a request that fill no whole part wait, with the count, in the
upload's row (less than a part: import_uploads.tail). The store's parts are completed into the
file when the last byte comes. A request holds one part in memory, never the file.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from typing import Any

from service.config import Config
from service.errors import BlobRefused, BlobUnavailable, ImportServiceError, RequestRefused
from service.sources import blob, parts
from service.sources.blob import upload_name
from service.sources.parts import UploadBusy
from service.storage.uploads import Upload, UploadStore
from service.units import human_size

log = logging.getLogger(__name__)

__all__ = ["ChecksumMismatch", "OffsetConflict", "UploadBusy", "UploadGone", "TooLarge"]

# A request without a checksum counts its bytes as stored every this many, so that a long
# request cut off (or a server killed) resumes near where it stopped, not where it began.
COUNT_EVERY_BYTES = 64 * 1024 * 1024
CHECKSUM_ALGORITHMS = ("sha256", "sha1", "md5")  # what a client may name in Upload-Checksum


class UploadGone(ImportServiceError):
    """No such upload for this caller: unknown, another customer's, expired or deleted."""


class OffsetConflict(ImportServiceError):
    """The request's offset is not the upload's stored count."""


class ChecksumMismatch(ImportServiceError):
    """The request's bytes do not have the checksum it announced; none were kept."""


class TooLarge(ImportServiceError):
    """An upload (or a request's bytes) past its declared length or max_file_bytes."""


def create(
    config: Config, store: UploadStore, customer_id: str, length: int, filename: str, metadata: dict[str, str]
) -> Upload:
    """A new, empty upload of `length` bytes for the customer."""
    if customer_id not in config.customers:
        raise RequestRefused(f"unknown customer {customer_id!r}", field="customer_id")
    if length > config.max_file_bytes:
        raise TooLarge(
            f"the upload's length ({length:,} bytes) is more than the max_file_bytes limit "
            f"({human_size(config.max_file_bytes)})"
        )
    name = upload_name(filename)
    kind = _kind(config, customer_id)
    if kind == "blob_root":
        upload = store.create(customer_id, name, length, metadata, config.upload_expiry_hours)
        parts.create(config.blob_root, customer_id, upload.id)
    else:
        upload_id = str(uuid.uuid4())
        state = blob.begin_parts(customer_id, kind, f"{upload_id}-{name}", length, config)
        upload = store.create(customer_id, name, length, metadata, config.upload_expiry_hours, upload_id, state)
    if length == 0:
        return finish(config, store, upload)
    return upload


def receive(
    config: Config,
    store: UploadStore,
    upload: Upload,
    offset: int,
    read: Callable[[int], bytes],
    count: int | None,
    checksum: tuple[str, bytes] | None = None,
) -> Upload:
    """Store a request's bytes at offset (`count` of them, None: until the body ends) and
    return the upload as it then is (finished when they were the last).

    Raises OffsetConflict when offset is not the stored count, TooLarge when the bytes would
    pass the upload's length, ChecksumMismatch when `checksum` (algorithm, digest) does not
    match them (none are kept), UploadBusy while another request writes it, UploadGone when
    it expired or was deleted meanwhile."""
    if upload.finished or offset != upload.received:
        raise OffsetConflict(
            f"Upload-Offset is {offset:,} but the upload has {upload.received:,} bytes stored"
            + (" and is finished" if upload.finished else "")
        )
    room = upload.length - offset
    if count is not None and count > room:
        raise TooLarge(f"the request has {count:,} bytes but the upload has room for {room:,} more")
    if upload.store is not None:
        _receive_parts(config, store, upload, offset, read, count, checksum)
        return _after(config, store, upload)
    algorithm = checksum[0] if checksum else None
    try:
        with parts.writing(config.blob_root, upload.customer_id, upload.id, offset, algorithm) as writer:
            counted = offset
            # A client that goes away mid-request ends its pieces early (parts.read_pieces);
            # a write that fails (a full disk) is the server's fault and fails the request.
            for piece in parts.read_pieces(read, room + 1 if count is None else count):
                if writer.written + len(piece) > room:
                    writer.discard(keep=counted)  # what was counted stays stored
                    raise TooLarge(f"the request has more bytes than the upload's {upload.length:,}")
                writer.write(piece)
                if checksum is None and offset + writer.written - counted >= COUNT_EVERY_BYTES:
                    counted = _count(store, writer, upload, counted)
            cut_off = count is not None and writer.written < count
            if cut_off:
                log.info("upload %s: the request ended after %d of its %d bytes", upload.id, writer.written, count)
            if checksum is not None:
                if cut_off or not hmac.compare_digest(writer.digest(), checksum[1]):
                    writer.discard()
                    if cut_off:
                        raise OffsetConflict("the request ended before all its bytes came; none were kept")
                    raise ChecksumMismatch(f"the request's bytes do not match their {checksum[0]} checksum")
            if offset + writer.written > counted:
                counted = _count(store, writer, upload, counted)
    except FileNotFoundError:
        raise UploadGone(f"no upload {upload.id}") from None
    return _after(config, store, upload)


def _after(config: Config, store: UploadStore, upload: Upload) -> Upload:
    """The upload as a request left it: finished when its last byte came."""
    current = store.get(upload.id)
    if current is None:
        raise UploadGone(f"no upload {upload.id}")
    if current.received == current.length and not current.finished:
        return finish(config, store, current)
    return current


def _receive_parts(
    config: Config,
    store: UploadStore,
    upload: Upload,
    offset: int,
    read: Callable[[int], bytes],
    count: int | None,
    checksum: tuple[str, bytes] | None,
) -> None:
    """Store a request's bytes as parts in the customer's own store (receive's rules, the same
    answers): a part is counted as soon as the store has it, unless a checksum covers the whole
    request; then all are counted at its end, or none. Parts put but never counted (a request
    cut off, a checksum that failed, a race lost) are never named, and the store drops them."""
    assert upload.store is not None
    state = upload.store
    part_bytes = int(state["part_bytes"])
    _, tail = store.pending(upload.id)
    buffer = bytearray(tail)  # counted bytes in no part yet, then this request's
    room = upload.length - offset
    hasher = hashlib.new(checksum[0]) if checksum else None
    written = 0
    counted = offset
    new_parts: list[dict[str, Any]] = []
    for piece in parts.read_pieces(read, room + 1 if count is None else count):
        if written + len(piece) > room:
            raise TooLarge(f"the request has more bytes than the upload's {upload.length:,}")
        buffer += piece
        written += len(piece)
        if hasher is not None:
            hasher.update(piece)
        while len(buffer) >= part_bytes:
            number = _next_part(store, upload)
            new_parts.append(blob.put_part(state, upload.customer_id, config, number, bytes(buffer[:part_bytes])))
            del buffer[:part_bytes]
            if checksum is None:
                counted = _count_parts(store, upload, counted, offset + written, new_parts, bytes(buffer))
                new_parts = []
    cut_off = count is not None and written < count
    if cut_off:
        log.info("upload %s: the request ended after %d of its %d bytes", upload.id, written, count)
    if checksum is not None and hasher is not None:
        if cut_off:
            raise OffsetConflict("the request ended before all its bytes came; none were kept")
        if not hmac.compare_digest(hasher.digest(), checksum[1]):
            raise ChecksumMismatch(f"the request's bytes do not match their {checksum[0]} checksum")
    if offset + written > counted:
        _count_parts(store, upload, counted, offset + written, new_parts, bytes(buffer))


def _next_part(store: UploadStore, upload: Upload) -> int:
    try:
        return store.next_part(upload.id)
    except LookupError:
        raise UploadGone(f"no upload {upload.id}") from None


def _count_parts(
    store: UploadStore, upload: Upload, counted: int, end: int, new_parts: list[dict[str, Any]], tail: bytes
) -> int:
    """Count the bytes up to end (parts the store has, and the tail): the new count. Another
    request that counted first wins; this one's parts are then never named (OffsetConflict)."""
    if not store.advance_parts(upload.id, counted, end, new_parts, tail):
        if store.get(upload.id) is None:
            raise UploadGone(f"no upload {upload.id}")
        raise OffsetConflict("another request stored bytes of this upload at the same offset first; none were kept")
    return end


def _count(store: UploadStore, writer: parts.Writer, upload: Upload, counted: int) -> int:
    """Make the written bytes durable and count them; the new count."""
    writer.sync()
    end = writer.start + writer.written
    if not store.advance(upload.id, counted, end):
        writer.discard()
        raise UploadGone(f"no upload {upload.id}")
    return end


def _kind(config: Config, customer_id: str) -> str:
    """Where the customer's uploads go: "blob_root", or its "s3", "azure" or "gcs" area."""
    settings = config.customer_settings.get(customer_id)
    return settings.uploads if settings is not None else "blob_root"


def finish(config: Config, store: UploadStore, upload: Upload) -> Upload:
    """Make a fully stored upload's file and mark the upload finished: its file moved into the
    customer's area of the blob root, or its parts (the tail the last) completed into the file
    in the customer's own store. A store that cannot be reached fails the request (503): the
    client's retry (an empty PATCH at the end) finishes it."""
    if upload.store is None:
        uri = parts.complete(config.blob_root, upload.customer_id, upload.id, upload.filename).resolve().as_uri()
    else:
        done, tail = store.pending(upload.id)
        try:
            if tail or not done:  # the last part may be short; an empty file is one empty part
                number = _next_part(store, upload)
                done = [*done, blob.put_part(upload.store, upload.customer_id, config, number, tail)]
            uri = blob.complete_parts(upload.store, upload.customer_id, config, done)
        except (BlobRefused, BlobUnavailable):
            # A finishing request that completed them and stopped before marking the upload
            # finished: the store has no multipart upload left, but has the file.
            if not _made(config, upload):
                raise
            uri = upload.store["uri"]
    finished = store.finish(upload.id, uri)
    if finished is None:  # deleted (or expired) meanwhile
        blob.delete(uri, upload.customer_id, config)
        raise UploadGone(f"no upload {upload.id}")
    return finished


def _made(config: Config, upload: Upload) -> bool:
    """Whether the file an upload's parts make is in its store already, whole."""
    assert upload.store is not None
    try:
        _, size, _ = blob.check(blob.locate(upload.store["uri"], upload.customer_id, config), upload.length)
    except BlobRefused:
        return False
    return size == upload.length


def delete(config: Config, store: UploadStore, upload: Upload) -> None:
    """Delete an upload and its bytes (tus termination)."""
    _remove_bytes(config, upload)  # first: a store that is down leaves the upload to delete again
    store.delete(upload.id)


def _remove_bytes(config: Config, upload: Upload) -> None:
    """Delete an upload's bytes: those still arriving (a file here, or parts in the customer's
    store), and its finished file wherever it went."""
    if upload.store is None:
        parts.remove(config.blob_root, upload.customer_id, upload.id)
    elif upload.blob_uri is None:
        blob.abort_parts(upload.store, upload.customer_id, config)
    if upload.blob_uri is not None:
        blob.delete(upload.blob_uri, upload.customer_id, config)


def sweep(config: Config, store: UploadStore) -> int:
    """Delete unfinished uploads past their expiry and finished ones past undo_retention_days,
    bytes first; how many went."""
    gone = 0
    for upload in store.due(config.undo_retention_days):
        try:
            _remove_bytes(config, upload)
        except BlobUnavailable as exc:  # its store is down: the next sweep tries again
            log.warning("upload %s: its file was not deleted this time: %s", upload.id, exc)
            continue
        if store.delete(upload.id) is not None:
            gone += 1
    if gone:
        log.info("deleted %d expired or old upload(s)", gone)
    return gone


def for_job(store: UploadStore, upload_id: object, customer_id: str) -> Upload:
    """The finished upload a job of this customer imports; RequestRefused naming upload_id for
    an unknown id, another customer's upload or an unfinished one."""
    upload = store.get(upload_id) if isinstance(upload_id, str) else None
    if upload is None or upload.customer_id != customer_id:
        raise RequestRefused(f"no upload {str(upload_id)[:60]!r} of customer {customer_id!r}", field="upload_id")
    if not upload.finished:
        raise RequestRefused(
            f"upload {upload.id} is not finished ({upload.received:,} of {upload.length:,} bytes received)",
            field="upload_id",
        )
    return upload
