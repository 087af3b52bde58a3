"""az:// blobs (SPEC 18, following SPEC 17 to the letter): URIs confined to the customer's area,
blobs read by ranged GETs through azure-storage-blob.

A blob is never copied whole (an XLSX package aside: a temp file, removed when closed).
Every GET names the ETag the job planned with (If-Match), so a replaced blob fails the job.
Credentials come from AZURE_STORAGE_CONNECTION_STRING (an account key or a SAS, applied to the
customer's account_url); without it the account is read anonymously (a public container).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

from service.config import AZURE_CONTAINER, AzureArea, azure_credential
from service.errors import BlobRefused, BlobUnavailable, FileRejected
from service.sources.ranged import CHANGED, open_ranged

SCHEME = "az://"
# Azure's limits for a blob name: 1,024 characters, at most 254 path segments.
MAX_NAME_CHARS = 1024
MAX_SEGMENTS = 254
MAX_PARTS = 50_000  # uncommitted blocks of one blob

# azure-core logs every request and response at INFO (URLs, headers): the workers' log would
# hold one line per ranged GET. Its warnings still show.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


@dataclass(frozen=True)
class AzureBlob:
    """One blob of a customer's Azure area; size and etag once it has been looked at."""

    container: str
    path: str  # the blob's name in its container
    account_url: str
    size: int | None = None
    etag: str | None = None
    # AZURE_STORAGE_CONNECTION_STRING (a secret: never printed, never compared).
    connection_string: str | None = field(default=None, repr=False, compare=False)

    @property
    def uri(self) -> str:
        """The blob's az:// URI."""
        return f"{SCHEME}{self.container}/{self.path}"

    @property
    def name(self) -> str:
        """The last segment of the blob's name, like Path.name."""
        return PurePosixPath(self.path).name

    @property
    def suffix(self) -> str:
        """The name's extension, like Path.suffix (detect_format reads it)."""
        return PurePosixPath(self.path).suffix

    def pinned(self, size: int, etag: str) -> AzureBlob:
        """The same blob, to be read only while it has this size and ETag."""
        return replace(self, size=size, etag=etag)


def area_prefix(area: AzureArea, customer_id: str) -> str:
    """The name prefix of a customer's area: <prefix>/<customer>/."""
    return f"{area.prefix.strip('/')}/{customer_id}/"


def parse(uri: str, customer_id: str, area: AzureArea | None, connection_string: str | None = None) -> AzureBlob:
    """The blob an az:// URI names, refused (BlobRefused, naming the rule) unless it lies in the
    customer's area az://<container>/<prefix>/<customer>/."""
    if area is None:
        raise BlobRefused(
            f"blob_uri scheme 'az' is not supported for customer {customer_id!r}: it has no Azure area (use file://)"
        )
    if "\x00" in uri:
        raise BlobRefused("blob_uri contains a NUL character")
    container, _, path = uri[len(SCHEME) :].partition("/")
    if not AZURE_CONTAINER.match(container):
        raise BlobRefused(
            f"blob_uri: {container[:80]!r} is not a valid container name (3-63 lowercase letters, digits, single hyphens)"
        )
    if any(c in uri for c in "?#"):
        raise BlobRefused("blob_uri must be az://container/path, without query or fragment")
    _check_path(path)
    if container != area.container:
        raise BlobRefused(
            f"blob_uri names container {container!r}; customer {customer_id!r} may read only {area.container!r}"
        )
    prefix = area_prefix(area, customer_id)
    if not path.startswith(prefix):
        raise BlobRefused(f"blob_uri is outside the Azure area of customer {customer_id!r} (az://{container}/{prefix})")
    return AzureBlob(container, path, area.account_url, connection_string=connection_string)


def _check_path(path: str) -> None:
    """Refuse an empty, over-long or ambiguous blob name (empty, '.' or '..' segments, a backslash,
    which some Azure tools turn into '/')."""
    if len(path) > MAX_NAME_CHARS:
        raise BlobRefused(f"blob_uri: the blob name is {len(path)} characters, over Azure's limit of {MAX_NAME_CHARS}")
    if not path:
        raise BlobRefused("blob_uri must be az://container/path with a path")
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise BlobRefused("blob_uri: the path must not have empty, '.' or '..' segments")
    if len(segments) > MAX_SEGMENTS:
        raise BlobRefused(f"blob_uri: the path has {len(segments)} segments, over Azure's limit of {MAX_SEGMENTS}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise BlobRefused("blob_uri: the path must not contain control characters")
    if "\\" in path:
        raise BlobRefused("blob_uri: the path must not contain a backslash")


_clients: dict[tuple[str, str | None], Any] = {}
_clients_lock = threading.Lock()


def client(account_url: str, connection_string: str | None) -> Any:
    """One BlobServiceClient per (account, credential) per process: short timeouts, few quick
    retries, so a dead endpoint fails a stage in seconds (the stage is retried like an
    unreachable customer DB)."""
    with _clients_lock:
        found = _clients.get((account_url, connection_string))
        if found is None:
            from azure.core.credentials import AzureSasCredential
            from azure.storage.blob import BlobServiceClient, LinearRetry

            credential: Any = None
            if connection_string is not None:
                parsed = azure_credential(connection_string) or {}
                credential = AzureSasCredential(parsed["sas"]) if "sas" in parsed else parsed or None
            found = BlobServiceClient(
                account_url,
                credential=credential,
                retry_policy=LinearRetry(backoff=1, retry_total=2, random_jitter_range=0.5),  # type: ignore[arg-type]
                connection_timeout=5,
                read_timeout=20,
            )
            _clients[(account_url, connection_string)] = found
        return found


def _blob_client(blob: AzureBlob) -> Any:
    return client(blob.account_url, blob.connection_string).get_blob_client(blob.container, blob.path)


def endpoint(blob: AzureBlob) -> str:
    """The account's URL, without any user:password or query in it (errors name it)."""
    parts = urlsplit(blob.account_url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path.rstrip('/')}"


def stat(blob: AzureBlob, max_bytes: int) -> AzureBlob:
    """Get the blob's properties (a HEAD): the same blob pinned to its size and ETag; refused when
    missing or too big."""
    try:
        properties = _blob_client(blob).get_blob_properties()
    except Exception as exc:
        raise _translate(exc, blob) from None
    size = int(properties.size)
    if size > max_bytes:
        raise BlobRefused(f"the file is {size} bytes, over the max_file_bytes limit ({max_bytes} bytes)")
    return blob.pinned(size, _etag(properties.etag))


def open_blob(blob: AzureBlob, max_bytes: int | None, whole: bool = False) -> BinaryIO:
    """A seekable binary reader of the blob's bytes: ranged GETs as it is read (whole: a temp
    copy, for a zip package). It reads only while the blob keeps the ETag it is pinned to."""
    from azure.core import MatchConditions

    if blob.etag is None or blob.size is None:
        blob = stat(blob, 1 << 62)
    client = _blob_client(blob)

    def fetch(start: int, length: int) -> bytes:
        try:
            download = client.download_blob(
                offset=start,
                length=length,
                etag=blob.etag,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
            return bytes(download.readall())
        except Exception as exc:
            raise _translate(exc, blob) from None

    return open_ranged(blob.size or 0, fetch, max_bytes, whole)


def upload(source: BinaryIO, area: AzureArea, customer_id: str, name: str, connection_string: str | None) -> AzureBlob:
    """Upload a local file into the customer's area under uploads/ and return the blob."""
    path = f"{area_prefix(area, customer_id)}uploads/{name}"
    blob = AzureBlob(area.container, path, area.account_url, connection_string=connection_string)
    try:
        _blob_client(blob).upload_blob(source, overwrite=False, max_concurrency=2)
    except Exception as exc:
        raise _translate(exc, blob) from None
    return blob


def _etag(value: Any) -> str:
    """An ETag as HTTP quotes it: the SDK gives a blob's properties quoted and a listing's bare."""
    text = str(value)
    return text if text.startswith('"') else f'"{text}"'


def list_prefix(prefix: AzureBlob) -> Iterator[tuple[AzureBlob, dict[str, Any]]]:
    """Every blob whose name starts with prefix.path, in name order, a page (5,000) at a time:
    (the blob pinned to its size and ETag, that version)."""
    container = client(prefix.account_url, prefix.connection_string).get_container_client(prefix.container)
    try:
        for item in container.list_blobs(name_starts_with=prefix.path):
            found = replace(prefix, path=str(item.name)).pinned(int(item.size), _etag(item.etag))
            yield found, {"etag": found.etag}
    except Exception as exc:
        raise _translate(exc, prefix) from None


def copy(source: AzureBlob, target: AzureBlob) -> None:
    """Copy the blob (the version it is pinned to: refused once it changed) to target, through
    this process in pieces (a server-side copy would need a SAS to read the source)."""
    from azure.core import MatchConditions

    try:
        download = _blob_client(source).download_blob(etag=source.etag, match_condition=MatchConditions.IfNotModified)
        _blob_client(target).upload_blob(download.chunks(), overwrite=True, max_concurrency=1)
    except Exception as exc:
        raise _translate(exc, source) from None


def delete(blob: AzureBlob) -> None:
    """Delete the blob (gone already: nothing to do)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        _blob_client(blob).delete_blob()
    except ResourceNotFoundError:
        pass
    except Exception as exc:
        raise _translate(exc, blob) from None


def begin_parts(blob: AzureBlob) -> dict[str, str]:
    """Start writing the blob in blocks (a tus upload going straight to Azure, SPEC 19): there is
    nothing to start; blocks are staged against its name and committed at the end."""
    return {}


def _block_id(number: int) -> str:
    # Every block id of a blob has the same length (Azure's rule); base64 as the REST API wants it.
    return base64.b64encode(f"part-{number:08d}".encode()).decode()


def put_part(blob: AzureBlob, state: dict[str, Any], number: int, data: bytes) -> dict[str, Any]:
    """Stage block `number` of the blob (uncommitted: not part of it until complete_parts). An
    empty part (an empty file) is no block: Azure refuses an empty one."""
    if not data:
        return {"n": number, "empty": True}
    try:
        _blob_client(blob).stage_block(_block_id(number), data, length=len(data))
    except Exception as exc:
        raise _translate(exc, blob) from None
    return {"n": number}


def complete_parts(blob: AzureBlob, state: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """Commit these blocks, in this order, as the blob (blocks staged but not named are dropped)."""
    from azure.storage.blob import BlobBlock

    try:
        blocks = [BlobBlock(block_id=_block_id(part["n"])) for part in parts if not part.get("empty")]
        _blob_client(blob).commit_block_list(blocks)
    except Exception as exc:
        raise _translate(exc, blob) from None


def abort_parts(blob: AzureBlob, state: dict[str, Any]) -> None:
    """Drop the staged blocks: Azure offers no call for that, and drops uncommitted blocks a week
    after the last was staged (they are not a blob: nobody can read them meanwhile)."""


def presign_put(blob: AzureBlob, expires_in: int) -> tuple[str, dict[str, str], datetime]:
    """A SAS URL that lets its holder create and write this one blob (create and write
    permissions, nothing else) for expires_in seconds; the headers its PUT must send (a Put Blob
    names the blob type); and when it expires.

    Signed with the account key of AZURE_STORAGE_CONNECTION_STRING when it holds one (a service
    SAS, signed locally). Otherwise with a user delegation key, which only a Microsoft Entra ID
    (token) credential can get (its identity needs the generateUserDelegationKey action, e.g. the
    Storage Blob Delegator role, and to write blobs, e.g. Storage Blob Data Contributor); a
    connection string with only a SAS, or none, cannot sign and is refused."""
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in)
    permission = BlobSasPermissions(create=True, write=True)
    parsed = azure_credential(blob.connection_string) if blob.connection_string else None
    try:
        if parsed and "account_key" in parsed:
            sas = generate_blob_sas(
                parsed["account_name"],
                blob.container,
                blob.path,
                account_key=parsed["account_key"],
                permission=permission,
                expiry=expiry,
            )
        else:
            service = client(blob.account_url, blob.connection_string)
            if not hasattr(service.credential, "get_token"):
                raise BlobRefused(
                    f"cannot sign an upload URL for {blob.uri}: that needs an account key in "
                    "AZURE_STORAGE_CONNECTION_STRING (AccountName=...;AccountKey=...) or a Microsoft Entra ID "
                    "credential for a user delegation key; a SAS cannot sign another"
                )
            key = service.get_user_delegation_key(datetime.now(UTC), expiry)
            sas = generate_blob_sas(
                service.account_name,
                blob.container,
                blob.path,
                user_delegation_key=key,
                permission=permission,
                expiry=expiry,
            )
    except BlobRefused:
        raise
    except Exception as exc:
        raise _translate(exc, blob) from None
    # Not the SDK's BlobClient.url: with a SAS connection string it carries that SAS too.
    url = f"{blob.account_url.rstrip('/')}/{blob.container}/{quote(blob.path, safe='/~')}?{sas}"
    return url, {"x-ms-blob-type": "BlockBlob"}, expiry


def _translate(exc: Exception, blob: AzureBlob) -> Exception:
    """An azure-core error as the service's: missing, changed, refused or unreachable; never with
    credentials in it (only the endpoint, container and path are named, never the SDK's text,
    which holds the request's URL)."""
    from azure.core.exceptions import AzureError, HttpResponseError, ResourceModifiedError, ResourceNotFoundError

    if isinstance(exc, ResourceModifiedError):
        return FileRejected(CHANGED)
    if isinstance(exc, ResourceNotFoundError):
        return BlobRefused(f"no object at {blob.uri}")
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        if status in (412, 416):  # If-Match failed; or a range past the end: the blob shrank
            return FileRejected(CHANGED)
        if status == 404:
            return BlobRefused(f"no object at {blob.uri}")
        if status >= 500 or status in (408, 429):
            return BlobUnavailable(f"the Azure endpoint {endpoint(blob)} failed ({status}) reading {blob.uri}")
        code = getattr(exc, "error_code", None)  # set by azure-storage-blob: the service's error code
        code = str(getattr(code, "value", code) or "")
        return BlobRefused(f"Azure refused access to {blob.uri}: {status} {code}".rstrip())
    if isinstance(exc, AzureError):
        return BlobUnavailable(f"the Azure endpoint {endpoint(blob)} cannot be reached ({type(exc).__name__})")
    return exc
