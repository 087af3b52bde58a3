"""s3:// blobs (SPEC 17): URIs confined to the customer's area, objects read by ranged GETs.

An object is never copied whole (an XLSX package aside: a temp file, removed when closed).
Every GET names the ETag the job planned with (If-Match), so a replaced object fails the job.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from service.config import S3Area
from service.errors import BlobRefused, BlobUnavailable, FileRejected
from service.sources.ranged import CHANGED, open_ranged

SCHEME = "s3://"
MAX_KEY_BYTES = 1024
MAX_PARTS = 10_000  # of one multipart upload; every part but the last at least 5 MiB
# S3's rules for a bucket name: 3-63 characters, lowercase letters, digits, dots and hyphens,
# a letter or digit at each end, no two dots in a row, not an IP address.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_IP = re.compile(r"\d+\.\d+\.\d+\.\d+\Z")


@dataclass(frozen=True)
class S3Object:
    """One object of a customer's S3 area; size and etag once it has been looked at."""

    bucket: str
    key: str
    endpoint_url: str | None = None
    region: str | None = None
    size: int | None = None
    etag: str | None = None

    @property
    def uri(self) -> str:
        """The object's s3:// URI."""
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        """The last segment of the key, like Path.name."""
        return PurePosixPath(self.key).name

    @property
    def suffix(self) -> str:
        """The key's extension, like Path.suffix (detect_format reads it)."""
        return PurePosixPath(self.key).suffix

    def pinned(self, size: int, etag: str) -> S3Object:
        """The same object, to be read only while it has this size and ETag."""
        return replace(self, size=size, etag=etag)


def area_prefix(area: S3Area, customer_id: str) -> str:
    """The key prefix of a customer's area: <prefix>/<customer>/."""
    return f"{area.prefix.strip('/')}/{customer_id}/"


def parse(uri: str, customer_id: str, area: S3Area | None) -> S3Object:
    """The object an s3:// URI names, refused (BlobRefused, naming the rule) unless it lies in
    the customer's area s3://<bucket>/<prefix>/<customer>/."""
    if area is None:
        raise BlobRefused(
            f"blob_uri scheme 's3' is not supported for customer {customer_id!r}: it has no S3 area (use file://)"
        )
    if "\x00" in uri:
        raise BlobRefused("blob_uri contains a NUL character")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    _check_bucket(bucket)
    if any(c in uri for c in "?#"):
        raise BlobRefused("blob_uri must be s3://bucket/key, without query or fragment")
    _check_key(key)
    if bucket != area.bucket:
        raise BlobRefused(f"blob_uri names bucket {bucket!r}; customer {customer_id!r} may read only {area.bucket!r}")
    prefix = area_prefix(area, customer_id)
    if not key.startswith(prefix) or key == prefix:
        raise BlobRefused(f"blob_uri is outside the S3 area of customer {customer_id!r} (s3://{bucket}/{prefix})")
    return S3Object(bucket, key, area.endpoint_url, area.region)


def _check_bucket(bucket: str) -> None:
    """Refuse a bucket name S3 would refuse."""
    if not _BUCKET.match(bucket) or ".." in bucket or _IP.match(bucket):
        raise BlobRefused(
            f"blob_uri: {bucket[:80]!r} is not a valid bucket name (3-63 lowercase letters, digits, dots, hyphens)"
        )


def _check_key(key: str) -> None:
    """Refuse an empty, over-long or ambiguous key (empty, '.' or '..' segments)."""
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise BlobRefused(f"blob_uri: the object key is {size} bytes, over S3's limit of {MAX_KEY_BYTES}")
    if not key:
        raise BlobRefused("blob_uri must be s3://bucket/key with a key")
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise BlobRefused("blob_uri: the key must not have empty, '.' or '..' segments")
    if any(ord(c) < 0x20 or c == "\x7f" for c in key):
        raise BlobRefused("blob_uri: the key must not contain control characters")


_clients: dict[tuple[str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def client(endpoint_url: str | None, region: str | None) -> Any:
    """One boto3 client per (endpoint, region) per process: short timeouts, few retries, so a
    dead endpoint fails a stage in seconds (the stage is retried like an unreachable customer DB)."""
    with _clients_lock:  # boto3's session set-up is not thread-safe; its clients are
        found = _clients.get((endpoint_url, region))
        if found is None:
            import boto3
            from botocore.config import Config as BotoConfig

            settings = BotoConfig(
                connect_timeout=5,
                read_timeout=20,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=32,
            )
            import botocore.session

            # Timestamps stay the text S3 sent: nothing here reads one, and parsing each listed
            # object's LastModified (dateutil) was a large share of listing a prefix (feeds).
            core = botocore.session.get_session()
            core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
            session = boto3.session.Session(botocore_session=core)
            found = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=settings)
            _clients[(endpoint_url, region)] = found
        return found


_presigners: dict[tuple[str | None, str | None], Any] = {}


def presigner(endpoint_url: str | None, region: str | None) -> Any:
    """One boto3 client per (endpoint, region) per process for signing URLs (no request is sent):
    SigV4 always (boto3 still signs some URLs with SigV2, which S3 refuses for newer buckets), and
    on AWS itself the bucket's regional host (boto3 would name the global s3.amazonaws.com, which
    redirects a PUT for a bucket outside us-east-1 and fails it; boto/boto3#1982, #2989)."""
    with _clients_lock:
        found = _presigners.get((endpoint_url, region))
        if found is None:
            import boto3
            from botocore.config import Config as BotoConfig

            # A custom endpoint (MinIO, moto...) keeps the addressing the reading client uses.
            addressing = {"addressing_style": "virtual"} if endpoint_url is None else {}
            settings = BotoConfig(signature_version="s3v4", s3=addressing)
            session = boto3.session.Session()
            found = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=settings)
            _presigners[(endpoint_url, region)] = found
        return found


def endpoint(obj: S3Object) -> str:
    """The endpoint's URL, without any user:password in it (errors name it)."""
    url = obj.endpoint_url or client(None, obj.region).meta.endpoint_url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}"


def stat(obj: S3Object, max_bytes: int) -> S3Object:
    """HEAD the object: the same object pinned to its size and ETag; refused when missing or too big."""
    try:
        head = client(obj.endpoint_url, obj.region).head_object(Bucket=obj.bucket, Key=obj.key)
    except Exception as exc:
        raise _translate(exc, obj) from None
    size = int(head["ContentLength"])
    if size > max_bytes:
        raise BlobRefused(f"the file is {size} bytes, over the max_file_bytes limit ({max_bytes} bytes)")
    return obj.pinned(size, str(head["ETag"]))


def open_object(obj: S3Object, max_bytes: int | None, whole: bool = False) -> BinaryIO:
    """A seekable binary reader of the object's bytes: ranged GETs as it is read (whole: a temp
    copy, for a zip package). It reads only while the object keeps the ETag it is pinned to."""
    if obj.etag is None or obj.size is None:
        obj = stat(obj, 1 << 62)
    s3 = client(obj.endpoint_url, obj.region)

    def fetch(start: int, length: int) -> bytes:
        try:
            answer = s3.get_object(
                Bucket=obj.bucket, Key=obj.key, Range=f"bytes={start}-{start + length - 1}", IfMatch=obj.etag
            )
            with answer["Body"] as body:
                return bytes(body.read())
        except Exception as exc:
            raise _translate(exc, obj) from None

    return open_ranged(obj.size or 0, fetch, max_bytes, whole)


def upload(source: BinaryIO, area: S3Area, customer_id: str, name: str) -> S3Object:
    """Upload a local file into the customer's area under uploads/ and return the object."""
    obj = S3Object(area.bucket, f"{area_prefix(area, customer_id)}uploads/{name}", area.endpoint_url, area.region)
    try:
        client(obj.endpoint_url, obj.region).upload_fileobj(source, obj.bucket, obj.key)
    except Exception as exc:
        raise _translate(exc, obj) from None
    return obj


def begin_parts(obj: S3Object) -> dict[str, str]:
    """Start a multipart upload of the object (a tus upload going straight to S3, SPEC 19):
    what the other *_parts calls need to go on with it."""
    try:
        started = client(obj.endpoint_url, obj.region).create_multipart_upload(Bucket=obj.bucket, Key=obj.key)
    except Exception as exc:
        raise _translate(exc, obj) from None
    return {"id": str(started["UploadId"])}


def put_part(obj: S3Object, state: dict[str, Any], number: int, data: bytes) -> dict[str, Any]:
    """Upload part `number` (1 to MAX_PARTS) of the multipart upload; what completing names it by."""
    try:
        answer = client(obj.endpoint_url, obj.region).upload_part(
            Bucket=obj.bucket, Key=obj.key, UploadId=state["id"], PartNumber=number, Body=data
        )
    except Exception as exc:
        raise _translate(exc, obj) from None
    return {"n": number, "etag": str(answer["ETag"])}


def complete_parts(obj: S3Object, state: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """Make the object of these parts, in this order (parts put but not named are dropped)."""
    named = [{"PartNumber": part["n"], "ETag": part["etag"]} for part in parts]
    try:
        client(obj.endpoint_url, obj.region).complete_multipart_upload(
            Bucket=obj.bucket, Key=obj.key, UploadId=state["id"], MultipartUpload={"Parts": named}
        )
    except Exception as exc:
        raise _translate(exc, obj) from None


def abort_parts(obj: S3Object, state: dict[str, Any]) -> None:
    """Drop the multipart upload and every part of it (one S3 dropped already: nothing to do)."""
    from botocore.exceptions import ClientError

    try:
        client(obj.endpoint_url, obj.region).abort_multipart_upload(
            Bucket=obj.bucket, Key=obj.key, UploadId=state["id"]
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise _translate(exc, obj) from None
    except Exception as exc:
        raise _translate(exc, obj) from None


def presign_put(obj: S3Object, expires_in: int) -> tuple[str, datetime]:
    """A presigned URL (SigV4, query-string auth) that lets its holder PUT this one object for
    expires_in seconds (S3 allows at most 7 days; blob.presign asks for at most 1 h), and when it
    expires. Signed locally with the credentials boto3 finds (env, profile, instance role); they
    need s3:PutObject on the area (a role's temporary credentials also end the URL when they do).
    Set the area's "region" to the bucket's: a URL signed for another region is refused."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    params = {"Bucket": obj.bucket, "Key": obj.key}
    try:
        url = str(
            presigner(obj.endpoint_url, obj.region).generate_presigned_url(
                "put_object", Params=params, ExpiresIn=expires_in, HttpMethod="PUT"
            )
        )
    except (NoCredentialsError, PartialCredentialsError):
        raise BlobRefused(f"no S3 credentials are configured to sign an upload URL for {obj.uri}") from None
    except Exception as exc:
        raise _translate(exc, obj) from None
    query = parse_qs(urlsplit(url).query)
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return url, signed_at + timedelta(seconds=int(query["X-Amz-Expires"][0]))


def list_prefix(prefix: S3Object) -> Iterator[tuple[S3Object, dict[str, Any]]]:
    """Every object whose key starts with prefix.key, in key order, a page (1,000) at a time:
    (the object pinned to its size and ETag, that version)."""
    pages = client(prefix.endpoint_url, prefix.region).get_paginator("list_objects_v2")
    try:
        for page in pages.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
            for item in page.get("Contents", []):
                found = replace(prefix, key=str(item["Key"])).pinned(int(item["Size"]), str(item["ETag"]))
                yield found, {"etag": found.etag}
    except Exception as exc:
        raise _translate(exc, prefix) from None


def copy(source: S3Object, target: S3Object) -> None:
    """Copy the object (the version it is pinned to: refused once it changed) to target."""
    try:
        client(source.endpoint_url, source.region).copy(
            {"Bucket": source.bucket, "Key": source.key},
            target.bucket,
            target.key,
            ExtraArgs={"CopySourceIfMatch": source.etag} if source.etag else None,
        )
    except Exception as exc:
        raise _translate(exc, source) from None


def delete(obj: S3Object) -> None:
    """Delete the object (gone already: S3 answers the same)."""
    try:
        client(obj.endpoint_url, obj.region).delete_object(Bucket=obj.bucket, Key=obj.key)
    except Exception as exc:
        raise _translate(exc, obj) from None


def _translate(exc: Exception, obj: S3Object) -> Exception:
    """A botocore error as the service's: missing, changed, refused or unreachable; never with
    credentials in it (only the endpoint, bucket and key are named)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "412") or status == 412:
            return FileRejected(CHANGED)
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return BlobRefused(f"no object at {obj.uri}")
        if code in ("InvalidRange", "416") or status == 416:
            return FileRejected(CHANGED)
        if status is not None and status >= 500:
            return BlobUnavailable(f"the S3 endpoint {endpoint(obj)} failed ({status}) reading {obj.uri}")
        return BlobRefused(f"S3 refused reading {obj.uri}: {code or status}")
    if isinstance(exc, BotoCoreError):
        if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            return BlobRefused(f"no S3 credentials are configured to read {obj.uri}")
        return BlobUnavailable(f"the S3 endpoint {endpoint(obj)} cannot be reached ({type(exc).__name__})")
    return exc
