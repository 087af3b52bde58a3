"""gs:// objects (SPEC 18, following SPEC 17 to the letter): URIs confined to the customer's area,
objects read by ranged GETs through google-cloud-storage.

An object is never copied whole (an XLSX package aside: a temp file, removed when closed).
Every GET names the generation the job planned with (ifGenerationMatch), so a replaced object
fails the job (412) and a deleted one fails it naming it (404). Credentials come from the
standard Google chain (GOOGLE_APPLICATION_CREDENTIALS, gcloud's, the metadata server); with
STORAGE_EMULATOR_HOST set, objects are read anonymously from that emulator.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from service.config import GCS_BUCKET, GcsArea
from service.errors import BlobRefused, BlobUnavailable, FileRejected
from service.sources.ranged import CHANGED, open_ranged

SCHEME = "gs://"
MAX_NAME_BYTES = 1024
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
# Connect / read timeouts of one request, and how long the library may retry one call.
TIMEOUT = (5, 20)
# Components of one composite object (GCS's limit): a tus upload going straight to GCS is parts,
# composed into the object at the end.
MAX_PARTS = 1024
COMPOSE_SOURCES = 32  # objects one compose request takes
RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class GcsObject:
    """One object of a customer's GCS area; size and generation once it has been looked at."""

    bucket: str
    name_in_bucket: str
    endpoint_url: str | None = None  # the area's, else the emulator's, else GCS's own
    emulator: bool = False  # read anonymously (an emulator: no Google credentials)
    size: int | None = None
    generation: int | None = None

    @property
    def uri(self) -> str:
        """The object's gs:// URI."""
        return f"{SCHEME}{self.bucket}/{self.name_in_bucket}"

    @property
    def name(self) -> str:
        """The last segment of the object's name, like Path.name."""
        return PurePosixPath(self.name_in_bucket).name

    @property
    def suffix(self) -> str:
        """The name's extension, like Path.suffix (detect_format reads it)."""
        return PurePosixPath(self.name_in_bucket).suffix

    def pinned(self, size: int, generation: int) -> GcsObject:
        """The same object, to be read only while it has this size and generation."""
        return replace(self, size=size, generation=generation)


def area_prefix(area: GcsArea, customer_id: str) -> str:
    """The name prefix of a customer's area: <prefix>/<customer>/."""
    return f"{area.prefix.strip('/')}/{customer_id}/"


def parse(uri: str, customer_id: str, area: GcsArea | None, emulator_host: str | None = None) -> GcsObject:
    """The object a gs:// URI names, refused (BlobRefused, naming the rule) unless it lies in the
    customer's area gs://<bucket>/<prefix>/<customer>/."""
    if area is None:
        raise BlobRefused(
            f"blob_uri scheme 'gs' is not supported for customer {customer_id!r}: it has no GCS area (use file://)"
        )
    if "\x00" in uri:
        raise BlobRefused("blob_uri contains a NUL character")
    bucket, _, name = uri[len(SCHEME) :].partition("/")
    if not GCS_BUCKET.match(bucket):
        raise BlobRefused(
            f"blob_uri: {bucket[:80]!r} is not a valid bucket name (3-63 lowercase letters, digits, -, _, .)"
        )
    if any(c in uri for c in "?#"):
        raise BlobRefused("blob_uri must be gs://bucket/path, without query or fragment")
    _check_name(name)
    if bucket != area.bucket:
        raise BlobRefused(f"blob_uri names bucket {bucket!r}; customer {customer_id!r} may read only {area.bucket!r}")
    prefix = area_prefix(area, customer_id)
    if not name.startswith(prefix):
        raise BlobRefused(f"blob_uri is outside the GCS area of customer {customer_id!r} (gs://{bucket}/{prefix})")
    return GcsObject(bucket, name, area.endpoint_url or emulator_host, emulator=emulator_host is not None)


def _check_name(name: str) -> None:
    """Refuse an empty, over-long or ambiguous object name (empty, '.' or '..' segments)."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise BlobRefused(f"blob_uri: the object name is {size} bytes, over GCS's limit of {MAX_NAME_BYTES}")
    if not name:
        raise BlobRefused("blob_uri must be gs://bucket/path with a path")
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        raise BlobRefused("blob_uri: the path must not have empty, '.' or '..' segments")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise BlobRefused("blob_uri: the path must not contain control characters")


_clients: dict[tuple[str | None, bool], Any] = {}
_clients_lock = threading.Lock()


def client(endpoint_url: str | None, emulator: bool) -> Any:
    """One storage.Client per (endpoint, emulator) per process: anonymous for an emulator, else
    the Google credential chain (google.auth.default)."""
    with _clients_lock:
        found = _clients.get((endpoint_url, emulator))
        if found is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            options = {"api_endpoint": endpoint_url} if endpoint_url else None
            credentials = AnonymousCredentials() if emulator else None  # type: ignore[no-untyped-call]
            found = storage.Client(project=None, credentials=credentials, client_options=options)
            _clients[(endpoint_url, emulator)] = found
        return found


def _retry() -> Any:
    """The library's retry of transient errors (429, 5xx, connection errors), cut short so a dead
    endpoint fails a stage in seconds (the stage is retried like an unreachable customer DB)."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_deadline(RETRY_SECONDS).with_delay(initial=0.5, maximum=2.0)


def _blob(obj: GcsObject) -> Any:
    return client(obj.endpoint_url, obj.emulator).bucket(obj.bucket).blob(obj.name_in_bucket)


def endpoint(obj: GcsObject) -> str:
    """The endpoint's URL, without any user:password or query in it (errors name it)."""
    parts = urlsplit(obj.endpoint_url or DEFAULT_ENDPOINT)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path.rstrip('/')}"


def stat(obj: GcsObject, max_bytes: int) -> GcsObject:
    """Get the object's metadata (no read of its bytes): the same object pinned to its size and
    generation; refused when missing or too big."""
    try:
        found = _blob(obj)
        found.reload(timeout=TIMEOUT, retry=_retry())
    except Exception as exc:
        raise _translate(exc, obj) from None
    size = int(found.size or 0)
    if size > max_bytes:
        raise BlobRefused(f"the file is {size} bytes, over the max_file_bytes limit ({max_bytes} bytes)")
    return obj.pinned(size, int(found.generation))


def open_object(obj: GcsObject, max_bytes: int | None, whole: bool = False) -> BinaryIO:
    """A seekable binary reader of the object's bytes: ranged GETs as it is read (whole: a temp
    copy, for a zip package). It reads only while the object keeps the generation it is pinned to."""
    if obj.generation is None or obj.size is None:
        obj = stat(obj, 1 << 62)
    gcs_blob = _blob(obj)

    def fetch(start: int, length: int) -> bytes:
        try:
            # ifGenerationMatch, not generation=: a replaced object must fail the job (412), not
            # be read on from a noncurrent version of a versioned bucket. raw_download: the
            # stored bytes, never decompressed in transit (ranges are of the stored bytes).
            return bytes(
                gcs_blob.download_as_bytes(
                    start=start,
                    end=start + length - 1,
                    if_generation_match=obj.generation,
                    raw_download=True,
                    checksum=None,
                    timeout=TIMEOUT,
                    retry=_retry(),
                )
            )
        except Exception as exc:
            raise _translate(exc, obj) from None

    return open_ranged(obj.size or 0, fetch, max_bytes, whole)


def upload(source: BinaryIO, area: GcsArea, customer_id: str, name: str, emulator_host: str | None) -> GcsObject:
    """Upload a local file into the customer's area under uploads/ and return the object."""
    path = f"{area_prefix(area, customer_id)}uploads/{name}"
    obj = GcsObject(area.bucket, path, area.endpoint_url or emulator_host, emulator=emulator_host is not None)
    try:
        _blob(obj).upload_from_file(source, if_generation_match=0, timeout=TIMEOUT, retry=_retry())
    except Exception as exc:
        raise _translate(exc, obj) from None
    return obj


def list_prefix(prefix: GcsObject) -> Iterator[tuple[GcsObject, dict[str, Any]]]:
    """Every object whose name starts with prefix.name_in_bucket, in name order, a page (1,000)
    at a time: (the object pinned to its size and generation, that version)."""
    store = client(prefix.endpoint_url, prefix.emulator)
    try:
        for item in store.list_blobs(prefix.bucket, prefix=prefix.name_in_bucket, timeout=TIMEOUT, retry=_retry()):
            found = replace(prefix, name_in_bucket=str(item.name)).pinned(int(item.size or 0), int(item.generation))
            yield found, {"generation": found.generation}
    except Exception as exc:
        raise _translate(exc, prefix) from None


def copy(source: GcsObject, target: GcsObject) -> None:
    """Copy the object (the generation it is pinned to: refused once it changed) to target."""
    bucket = client(source.endpoint_url, source.emulator).bucket(source.bucket)
    try:
        bucket.copy_blob(
            _blob(source),
            client(target.endpoint_url, target.emulator).bucket(target.bucket),
            target.name_in_bucket,
            if_source_generation_match=source.generation,
            timeout=TIMEOUT,
            retry=_retry(),
        )
    except Exception as exc:
        raise _translate(exc, source) from None


def delete(obj: GcsObject) -> None:
    """Delete the object (gone already: nothing to do)."""
    from google.api_core.exceptions import NotFound

    try:
        _blob(obj).delete(timeout=TIMEOUT, retry=_retry())
    except NotFound:
        pass
    except Exception as exc:
        raise _translate(exc, obj) from None


def begin_parts(obj: GcsObject) -> dict[str, str]:
    """Start writing the object in parts (a tus upload going straight to GCS, SPEC 19): each part
    is an object of its own under `<name>.parts/`, composed into the object at the end."""
    return {}


def _part(obj: GcsObject, name: str) -> Any:
    return _blob(replace(obj, name_in_bucket=f"{obj.name_in_bucket}.parts/{name}"))


def put_part(obj: GcsObject, state: dict[str, Any], number: int, data: bytes) -> dict[str, Any]:
    """Upload part `number` as an object of its own (not part of the object until complete_parts)."""
    try:
        _part(obj, f"{number:08d}").upload_from_string(data, timeout=TIMEOUT, retry=_retry())
    except Exception as exc:
        raise _translate(exc, obj) from None
    return {"n": number}


def complete_parts(obj: GcsObject, state: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """Compose these parts, in this order, into the object (COMPOSE_SOURCES at a time, then
    those composites), then delete every part object, those not named included."""
    try:
        sources = [_part(obj, f"{part['n']:08d}") for part in parts]
        round_ = 0
        while len(sources) > COMPOSE_SOURCES:
            round_ += 1
            grouped = []
            for i in range(0, len(sources), COMPOSE_SOURCES):
                target = _part(obj, f"c{round_}-{i // COMPOSE_SOURCES:05d}")
                target.compose(sources[i : i + COMPOSE_SOURCES], timeout=TIMEOUT, retry=_retry())
                grouped.append(target)
            sources = grouped
        _blob(obj).compose(sources, timeout=TIMEOUT, retry=_retry())
    except Exception as exc:
        raise _translate(exc, obj) from None
    abort_parts(obj, state)


def abort_parts(obj: GcsObject, state: dict[str, Any]) -> None:
    """Delete every part object of the upload (none left: nothing to do)."""
    from google.api_core.exceptions import NotFound

    store = client(obj.endpoint_url, obj.emulator)
    try:
        for part in store.list_blobs(
            obj.bucket, prefix=f"{obj.name_in_bucket}.parts/", timeout=TIMEOUT, retry=_retry()
        ):
            try:
                part.delete(timeout=TIMEOUT, retry=_retry())
            except NotFound:
                pass
    except Exception as exc:
        raise _translate(exc, obj) from None


def presign_put(obj: GcsObject, expires_in: int) -> tuple[str, datetime]:
    """A V4 signed URL (XML API, path style, on the object's endpoint) that lets its holder PUT
    this one object for expires_in seconds, and when it expires. No header is bound: the client
    may send any Content-Type.

    Signing needs a service account, found by the standard Google chain (google.auth.default),
    an emulator too (the emulator does not check the signature, but the URL is signed all the
    same): either its key (GOOGLE_APPLICATION_CREDENTIALS naming a key file: signed locally), or
    an attached service account (GCE, GKE workload identity, Cloud Run: signed by the IAM
    Credentials API's signBlob, which needs that API enabled and iam.serviceAccounts.signBlob on
    the account itself, e.g. roles/iam.serviceAccountTokenCreator). Either way the account needs
    storage.objects.create on the bucket (roles/storage.objectCreator) for the PUT to succeed."""
    from google.auth import exceptions as auth

    try:
        credentials, signer = _signing_credentials(obj)
        url = str(
            _blob(obj).generate_signed_url(
                version="v4",
                method="PUT",
                expiration=timedelta(seconds=expires_in),
                api_access_endpoint=(obj.endpoint_url or DEFAULT_ENDPOINT).rstrip("/"),
                credentials=credentials,
                **signer,
            )
        )
    except BlobRefused:
        raise
    except auth.DefaultCredentialsError:
        raise BlobRefused(f"no Google credentials are configured to sign an upload URL for {obj.uri}") from None
    except auth.RefreshError:
        raise BlobRefused(f"the Google credentials could not get a token to sign an upload URL for {obj.uri}") from None
    except auth.TransportError as exc:
        # The library's text holds the IAM answer; a non-200 answer is a refusal, not an outage.
        if "signBytes API" in str(exc):
            raise BlobRefused(
                f"the IAM Credentials API refused to sign an upload URL for {obj.uri} "
                "(the service account needs iam.serviceAccounts.signBlob on itself)"
            ) from None
        raise _translate(exc, obj) from None
    except Exception as exc:
        raise _translate(exc, obj) from None
    query = parse_qs(urlsplit(url).query)
    signed_at = datetime.strptime(query["X-Goog-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return url, signed_at + timedelta(seconds=int(query["X-Goog-Expires"][0]))


def _signing_credentials(obj: GcsObject) -> tuple[Any, dict[str, str]]:
    """The credentials that sign, and for an attached service account (no private key here)
    the email and access token generate_signed_url hands to IAM signBlob."""
    import google.auth
    from google.auth.credentials import Signing
    from google.auth.transport.requests import Request

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    if isinstance(credentials, Signing):  # a key file, or impersonated credentials
        return credentials, {}
    credentials.refresh(Request())  # the metadata server names the account once asked
    email = getattr(credentials, "service_account_email", None)
    if not email or email == "default" or not credentials.token:
        raise BlobRefused(
            f"cannot sign an upload URL for {obj.uri}: the Google credentials are not a service account's "
            "(a user's gcloud login cannot sign; use a service account key or an attached service account)"
        )
    return credentials, {"service_account_email": email, "access_token": credentials.token}


def _translate(exc: Exception, obj: GcsObject) -> Exception:
    """A google-cloud-storage error as the service's: missing, changed, refused or unreachable;
    never with credentials in it (only the endpoint, bucket and name are named, never the
    library's text, which holds the request's URL)."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(exc, (api.PreconditionFailed, api.RequestRangeNotSatisfiable)):
        return FileRejected(CHANGED)  # another generation; or a range past the end: it shrank
    if isinstance(exc, api.NotFound):
        return BlobRefused(f"no object at {obj.uri}")
    if isinstance(exc, auth.DefaultCredentialsError):
        return BlobRefused(f"no Google credentials are configured to read {obj.uri}")
    if isinstance(exc, api.GoogleAPICallError) and exc.code is not None:
        status = int(exc.code)
        if status >= 500 or status in (408, 429):
            return BlobUnavailable(f"the GCS endpoint {endpoint(obj)} failed ({status}) reading {obj.uri}")
        return BlobRefused(f"GCS refused access to {obj.uri}: {status}")
    if isinstance(exc, (api.RetryError, auth.TransportError, OSError)):  # requests' errors are OSErrors
        return BlobUnavailable(f"the GCS endpoint {endpoint(obj)} cannot be reached ({type(exc).__name__})")
    return exc
