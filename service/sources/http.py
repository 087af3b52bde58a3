"""https:// (and http://) blobs (SPEC 18): URLs under one of the customer's url_prefixes, read
from the server that serves them over connections to checked addresses only (SPEC 16).

When the server offers byte ranges and a strong ETag, the file is read like an S3 object: each
read is a ranged GET carrying If-Match and If-Range with that ETag, so a replaced file fails the
job (a 412, a 200 with the whole new body, another ETag). Otherwise the file can only be read
front to back: one GET whose body a forward-only reader counts against max_file_bytes and the
Content-Length (whole: a temp copy, removed when closed). No redirect is followed. A URL's
query string (often a signature) never appears in an error: they show `shown_url`.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass, field, replace
from http.client import HTTPConnection, HTTPException, HTTPResponse
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from service import hosts
from service.config import CustomerSettings
from service.errors import BlobRefused, BlobUnavailable, FileRejected, LimitExceeded
from service.sources.ranged import CHANGED, READ_BYTES, open_ranged, temp_copy

log = logging.getLogger(__name__)

MAX_URL_CHARS = 4096  # signed URLs are long; enqueue's own limit on blob_uri is the same
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 20.0  # between two reads of one answer
FETCH_SECONDS = 60.0  # one ranged GET in all: a server dribbling its bytes fails the read
USER_AGENT = "import-service/1"
# Answers to a HEAD that mean "ask with a GET" (signed URLs are often signed for GET only).
HEAD_REFUSED = (403, 405, 501)
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*\Z", re.IGNORECASE)


@dataclass(frozen=True)
class HttpObject:
    """One file at a customer's URL; what its server said of it once it has been looked at."""

    url: str = field(repr=False)  # its query may hold a signature: shown only as `shown`
    allow_private: bool = False  # the customer's allow_private_hosts (SPEC 16)
    checked: bool = False  # size, etag, ranges and last_modified are the server's answer
    size: int | None = None  # None: the server sent no Content-Length
    etag: str | None = None
    ranges: bool = False  # the server offers byte ranges
    last_modified: str | None = None

    @property
    def shown(self) -> str:
        """The URL as an error may show it: no query string, no credentials."""
        return hosts.shown_url(self.url)

    @property
    def name(self) -> str:
        """The last segment of the URL's path, like Path.name."""
        return PurePosixPath(unquote(urlsplit(self.url).path)).name

    @property
    def suffix(self) -> str:
        """The name's extension, like Path.suffix (detect_format reads it)."""
        return PurePosixPath(self.name).suffix

    @property
    def ranged(self) -> bool:
        """Whether reads can be ranged GETs pinned to the version: ranges, a size, a strong ETag."""
        strong = self.etag is not None and not self.etag.startswith("W/")
        return self.ranges and strong and self.size is not None

    def pinned(
        self, size: int | None, etag: str | None, *, ranges: bool = True, last_modified: str | None = None
    ) -> HttpObject:
        """The same file, to be read only while it has this size and ETag (or Last-Modified)."""
        return replace(self, checked=True, size=size, etag=etag, ranges=ranges, last_modified=last_modified)

    def version(self) -> dict[str, Any]:
        """What a plan records to know this version again: the ETag (and ranges) of a ranged
        file; else the ETag, else the Last-Modified, else nothing of a file read front to back."""
        if self.ranged:
            return {"etag": self.etag, "ranges": True}
        if self.etag is not None:
            return {"etag": self.etag}
        return {"last_modified": self.last_modified} if self.last_modified is not None else {}


def parse(uri: str, customer_id: str, settings: CustomerSettings | None) -> HttpObject:
    """The file an http(s):// URI names, refused (BlobRefused, naming the rule, never echoing
    the URI) unless it lies under one of the customer's url_prefixes."""
    scheme = uri.partition(":")[0].lower()
    if settings is None or not settings.url_prefixes:
        raise BlobRefused(
            f"blob_uri scheme {scheme!r} is not supported for customer {customer_id!r}: "
            "it has no url_prefixes configured (use file://)"
        )
    problem = hosts.url_problem(uri, MAX_URL_CHARS)
    if problem is not None:
        raise BlobRefused(f"blob_uri {problem}")
    parts = urlsplit(uri)
    if parts.fragment or uri.endswith("#"):
        raise BlobRefused("blob_uri must not have a #fragment")
    if not (parts.hostname or "").isascii():
        raise BlobRefused("blob_uri: write a host name that is not ASCII in its xn-- (punycode) form")
    if not hosts.under_prefixes(uri, settings.url_prefixes):
        allowed = ", ".join(settings.url_prefixes)
        raise BlobRefused(f"blob_uri must start with one of the url_prefixes of customer {customer_id!r}: {allowed}")
    obj = HttpObject(uri, settings.allow_private_hosts)
    host = parts.hostname or ""
    if hosts.literal_address(host) is not None:  # an address is judged here, a name at each connection
        try:
            hosts.checked_addresses(host, 0, obj.allow_private, lambda name, port: [])
        except hosts.HostRefused as exc:
            raise _translate(exc, obj) from None
    return obj


def stat(obj: HttpObject, max_bytes: int) -> HttpObject:
    """HEAD the file (or GET its first byte when HEAD is refused): the same file pinned to its
    size, ETag, Last-Modified and whether the server offers ranges; refused when missing or too big."""
    answer = _head(obj, "HEAD", {})
    status, size, ranges = answer.status, _number(answer.getheader("Content-Length")), _offers_ranges(answer)
    if status in HEAD_REFUSED:
        log.info("%s refused a HEAD (HTTP %d): asking for its first byte instead", hosts.origin(obj.url), status)
        answer = _head(obj, "GET", {"Range": "bytes=0-0"})
        status, size, ranges = answer.status, _number(answer.getheader("Content-Length")), False
        total = _range_total(answer.getheader("Content-Range"))
        if status in (206, 416) and total is not None:  # 416: an empty file has no byte 0
            status, size, ranges = 200, total, True
    if status != 200:
        raise _status_error(status, obj)
    if size is not None and size > max_bytes:
        raise BlobRefused(f"the file is {size} bytes, over the max_file_bytes limit ({max_bytes} bytes)")
    return obj.pinned(size, answer.getheader("ETag"), ranges=ranges, last_modified=answer.getheader("Last-Modified"))


def open_object(obj: HttpObject, max_bytes: int | None, whole: bool = False) -> BinaryIO:
    """A binary reader of the file: seekable, by ranged GETs, when the server offers ranges and an
    ETag; else forward-only, one GET (see StreamReader). whole: a temp copy, for a zip package."""
    if not obj.checked:
        obj = stat(obj, 1 << 62)
    if obj.ranged:
        return open_ranged(obj.size or 0, lambda start, length: _fetch(obj, start, length), max_bytes, whole)
    if max_bytes is not None and obj.size is not None and obj.size > max_bytes:
        raise _too_big(obj.size, max_bytes)
    reader = _stream(obj, max_bytes)
    return temp_copy(reader, "import-http-") if whole else reader


def _fetch(obj: HttpObject, start: int, length: int) -> bytes:
    """The bytes [start, start + length) by ranged GETs pinned to the ETag (a server may send
    less than a range asked for: the rest is asked for again); CHANGED when another file answers."""
    data = b""
    while len(data) < length and (piece := _fetch_once(obj, start + len(data), length - len(data))):
        data += piece
    return data


def _fetch_once(obj: HttpObject, start: int, length: int) -> bytes:
    """One ranged GET with If-Match and If-Range: the bytes the server sends from `start`."""
    assert obj.etag is not None
    headers = {"Range": f"bytes={start}-{start + length - 1}", "If-Match": obj.etag, "If-Range": obj.etag}
    conn, answer = _request(obj, "GET", headers)
    try:
        status, etag = answer.status, answer.getheader("ETag")
        if status == 200 and etag == obj.etag:
            raise FileRejected(f"the server {hosts.origin(obj.url)} offers byte ranges but sent the whole file")
        if status in (200, 412, 416) or (status == 206 and etag not in (None, obj.etag)):
            raise FileRejected(CHANGED)  # 200: If-Range found another ETag; 412: If-Match did
        if status != 206:
            raise _status_error(status, obj)
        found = _CONTENT_RANGE.match(answer.getheader("Content-Range") or "")
        if found is None or found.group(1) is None or int(found.group(1)) != start or found.group(3) != str(obj.size):
            raise FileRejected(CHANGED)  # another range, or the file has another size now
        sent = min(int(found.group(2)) + 1 - start, length)
        data = _read(answer, sent, obj)
        if len(data) < sent:
            raise BlobUnavailable(f"the server {hosts.origin(obj.url)} cannot be reached (it closed mid-answer)")
        return data
    finally:
        conn.close()


def _read(answer: HTTPResponse, length: int, obj: HttpObject) -> bytes:
    """Up to `length` bytes of an answer's body, within FETCH_SECONDS in all (a server that
    dribbles its bytes would otherwise hold the worker's thread for as long as it likes)."""
    data = bytearray()
    deadline = time.monotonic() + FETCH_SECONDS
    try:
        while len(data) < length and (piece := answer.read(min(length - len(data), READ_BYTES))):
            data += piece
            if time.monotonic() > deadline:
                raise BlobUnavailable(f"the server {hosts.origin(obj.url)} sends too slowly (over {FETCH_SECONDS:g} s)")
    except (OSError, HTTPException) as exc:
        raise _translate(exc, obj) from None
    return bytes(data)


def _stream(obj: HttpObject, max_bytes: int | None) -> BinaryIO:
    """One GET of the whole file, checked against the version it is pinned to."""
    conn, answer = _request(obj, "GET", {})
    try:
        if answer.status != 200:
            raise _status_error(answer.status, obj) if answer.status != 206 else FileRejected(CHANGED)
        etag, modified = answer.getheader("ETag"), answer.getheader("Last-Modified")
        size = _number(answer.getheader("Content-Length"))
        # Only what the plan recorded is compared (a HEAD may leave out what a GET says).
        if obj.etag is not None and etag != obj.etag:
            raise FileRejected(CHANGED)
        if obj.etag is None and obj.last_modified is not None and modified != obj.last_modified:
            raise FileRejected(CHANGED)
        if obj.size and size is not None and size != obj.size:
            raise FileRejected(CHANGED)
        if max_bytes is not None and size is not None and size > max_bytes:
            raise _too_big(size, max_bytes)
        return io.BufferedReader(StreamReader(obj, conn, answer, max_bytes), READ_BYTES)
    except BaseException:
        conn.close()
        raise


class StreamReader(io.RawIOBase):
    """The body of one GET, front to back only (seekable() is False): counted against max_bytes
    (LimitExceeded) and against the Content-Length (a short body is another file: CHANGED)."""

    def __init__(self, obj: HttpObject, conn: HTTPConnection, answer: HTTPResponse, max_bytes: int | None) -> None:
        super().__init__()
        self._obj, self._conn, self._answer = obj, conn, answer
        self._max, self._count = max_bytes, 0
        self._expected = _number(answer.getheader("Content-Length")) or obj.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        try:
            got = self._answer.readinto(memoryview(buffer).cast("B"))
        except (OSError, HTTPException) as exc:
            raise _translate(exc, self._obj) from None
        if not got:
            if self._expected is not None and self._count < self._expected:
                raise FileRejected(CHANGED)  # the body ended short of its Content-Length
            return 0
        self._count += got
        if self._max is not None and self._count > self._max:
            raise _too_big(self._count, self._max, "at least ")
        return got

    def close(self) -> None:
        self._conn.close()
        super().close()


def _head(obj: HttpObject, method: str, headers: dict[str, str]) -> HTTPResponse:
    """The head of an answer (status and headers); its body is not read."""
    conn, answer = _request(obj, method, headers)
    conn.close()
    return answer


def _request(obj: HttpObject, method: str, headers: dict[str, str]) -> tuple[HTTPConnection, HTTPResponse]:
    """Send one request over a pinned connection; (the connection, the answer's head)."""
    parts = urlsplit(obj.url)
    host, port = parts.hostname or "", parts.port or hosts.default_port(parts.scheme)
    conn = hosts.pinned_connection(
        parts.scheme, host, port, CONNECT_TIMEOUT_SECONDS, obj.allow_private, read_timeout=READ_TIMEOUT_SECONDS
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target, headers={"User-Agent": USER_AGENT, **headers})
        return conn, conn.getresponse()
    except Exception as exc:
        conn.close()
        raise _translate(exc, obj) from None


def _status_error(status: int, obj: HttpObject) -> Exception:
    """An answer that is not the file, as the service's error: gone, moved, refused or failing."""
    if 300 <= status < 400:
        return BlobRefused(f"{obj.shown} answered HTTP {status}: redirect not followed")
    if status in (404, 410):
        return BlobRefused(f"no file at {obj.shown} (HTTP {status})")
    if status == 412:
        return FileRejected(CHANGED)
    if status >= 500 or status in (408, 429):
        return BlobUnavailable(f"the server {hosts.origin(obj.url)} failed (HTTP {status})")
    return BlobRefused(f"the server refused reading {obj.shown}: HTTP {status}")


def _translate(exc: Exception, obj: HttpObject) -> Exception:
    """A connection's error as the service's: refused (a private host, an untrusted certificate)
    or unreachable, naming the server only (scheme, host, port)."""
    server = hosts.origin(obj.url)
    if isinstance(exc, hosts.HostRefused):
        return BlobRefused(f"blob_uri: {exc} (unless the customer's allow_private_hosts is set)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BlobRefused(f"the TLS certificate of {server} is not trusted ({exc.verify_message})")
    if isinstance(exc, ssl.SSLError):
        reason = f"TLS error: {exc.reason or type(exc).__name__}"
    elif isinstance(exc, socket.gaierror | UnicodeError):
        reason = "host name not found"
    elif isinstance(exc, TimeoutError):
        reason = "timed out"
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(exc, OSError | HTTPException):
        reason = f"network error: {getattr(exc, 'strerror', None) or type(exc).__name__}"
    else:
        return exc
    return BlobUnavailable(f"the server {server} cannot be reached ({reason})")


def _offers_ranges(answer: HTTPResponse) -> bool:
    return "bytes" in (answer.getheader("Accept-Ranges") or "").lower().replace(",", " ").split()


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def _range_total(text: str | None) -> int | None:
    """The N of a Content-Range 'bytes a-b/N' or 'bytes */N'."""
    found = _CONTENT_RANGE.match(text or "")
    return int(found.group(3)) if found is not None and found.group(3) != "*" else None


def _too_big(size: int, max_bytes: int, at_least: str = "") -> LimitExceeded:
    return LimitExceeded(
        f"the file has {at_least}{size:,} bytes, more than the max_file_bytes limit ({max_bytes:,} bytes)"
    )
