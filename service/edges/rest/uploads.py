"""tus 1.0.0 at /uploads (SPEC 19): core, creation, creation-with-upload, termination,
expiration and checksum, so that any stock tus client (tus-js-client, tuspy) can hand the
service a file and resume it after a dropped connection.

Only the protocol is here: its headers in and out. The upload itself (tenancy, limits, where
the bytes go, when they count as stored) is the Api's and service.stages.uploads'. Every
answer carries Tus-Resumable; errors keep the REST error body (tus clients read the status).
Checked against the protocol text (https://tus.io/protocols/resumable-upload); no server
library fits falcon and these storage rules (see docs/uploads.md).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from datetime import UTC, datetime
from typing import Any

import falcon

from service.config import Config
from service.edges.api import Api
from service.edges.rest.bodies import discard_body, read_json
from service.errors import RequestRefused
from service.stages.uploads import CHECKSUM_ALGORITHMS
from service.storage.uploads import Upload

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
OFFSET_STREAM = "application/offset+octet-stream"
MAX_METADATA_CHARS = 4096
_NUMBER = re.compile(r"[0-9]{1,19}\Z")
_KEY = re.compile(r"[!-+\--~]{1,100}\Z")  # printable ASCII without space or comma


class TusHeaders:
    """Middleware: every answer under /uploads says which tus version it speaks; a request
    (but OPTIONS) that speaks another is refused with 412 before its resource runs (after the
    token is checked: without one, the answer is 401 whatever else is wrong)."""

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        if not _is_tus(req) or req.method == "OPTIONS":
            return
        version = req.get_header("Tus-Resumable")
        if version != TUS_VERSION:
            resp.set_header("Tus-Version", TUS_VERSION)
            discard_body(req)
            raise falcon.HTTPPreconditionFailed(
                description=f"Tus-Resumable must be {TUS_VERSION} (the tus version this server speaks)"
                + ("" if version is None else f", not {version[:40]!r}")
            )

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        if _is_tus(req):
            resp.set_header("Tus-Resumable", TUS_VERSION)
            resp.set_header("Cache-Control", "no-store")


def _is_tus(req: falcon.Request) -> bool:
    return req.path == "/uploads" or req.path.startswith("/uploads/") and req.path != "/uploads/presign"


def options(resp: falcon.Response, config: Config) -> None:
    """What this server offers (tus OPTIONS): 204 with its version, extensions and limits."""
    resp.status = falcon.HTTP_204
    resp.set_header("Tus-Version", TUS_VERSION)
    resp.set_header("Tus-Extension", EXTENSIONS)
    resp.set_header("Tus-Max-Size", str(config.max_file_bytes))
    resp.set_header("Tus-Checksum-Algorithm", ",".join(CHECKSUM_ALGORITHMS))


class UploadsResource:
    """/uploads: OPTIONS (public: a browser's preflight carries no token) and POST (creation)."""

    public_methods = frozenset({"OPTIONS"})

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_options(self, req: falcon.Request, resp: falcon.Response) -> None:
        options(resp, self.api.config)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create an upload (201 with its Location), storing the request's body if it has one."""
        if req.get_header("Upload-Defer-Length") is not None:
            discard_body(req)
            raise RequestRefused("Upload-Defer-Length is not supported: send Upload-Length", field="upload_length")
        length = _number(req, "Upload-Length")
        if length is None:
            discard_body(req)
            raise RequestRefused("Upload-Length is required (the file's size in bytes)", field="upload_length")
        try:
            metadata = parse_metadata(req.get_header("Upload-Metadata"))
        except RequestRefused:
            discard_body(req)
            raise
        upload = self.api.create_upload(req.context.access, length, metadata)
        if _has_body(req):
            if _content_type(req) != OFFSET_STREAM:
                discard_body(req)
                raise falcon.HTTPUnsupportedMediaType(description=f"an upload's bytes come as {OFFSET_STREAM}")
            upload = self.api.receive_upload(
                req.context.access, upload.id, 0, _reader(req), req.content_length, _checksum(req)
            )
        resp.status = falcon.HTTP_201
        resp.location = f"{req.root_path}/uploads/{upload.id}"
        _state(resp, upload)
        resp.media = upload_view(upload)


class UploadResource:
    """/uploads/{upload_id}: OPTIONS, HEAD (its offset), PATCH (its bytes), DELETE (termination)."""

    public_methods = frozenset({"OPTIONS"})

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_options(self, req: falcon.Request, resp: falcon.Response, upload_id: str) -> None:
        options(resp, self.api.config)

    def on_head(self, req: falcon.Request, resp: falcon.Response, upload_id: str) -> None:
        """The upload's length and stored offset, so a client resumes there."""
        upload = self.api.upload(req.context.access, upload_id)
        resp.status = falcon.HTTP_200
        _state(resp, upload)
        resp.set_header("Upload-Length", str(upload.length))
        if upload.metadata:
            resp.set_header("Upload-Metadata", format_metadata(upload.metadata))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, upload_id: str) -> None:
        """Store the body at Upload-Offset: 204 with the new offset."""
        if _content_type(req) != OFFSET_STREAM:
            discard_body(req)
            raise falcon.HTTPUnsupportedMediaType(description=f"PATCH needs Content-Type: {OFFSET_STREAM}")
        offset = _number(req, "Upload-Offset")
        if offset is None:
            discard_body(req)
            raise RequestRefused("Upload-Offset is required (where these bytes go)", field="upload_offset")
        checksum = _checksum(req)
        upload = self.api.receive_upload(
            req.context.access, upload_id, offset, _reader(req), req.content_length, checksum
        )
        resp.status = falcon.HTTP_204
        _state(resp, upload)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, upload_id: str) -> None:
        """Delete the upload and its bytes (finished or not)."""
        discard_body(req)
        self.api.delete_upload(req.context.access, upload_id)
        resp.status = falcon.HTTP_204


def upload_view(upload: Upload) -> dict[str, Any]:
    """An upload as JSON (the body of a creation answer)."""
    return {
        "upload_id": upload.id,
        "customer_id": upload.customer_id,
        "filename": upload.filename,
        "length": upload.length,
        "offset": upload.received,
        "finished": upload.finished,
        "expires_at": None if upload.finished else upload.expires_at.isoformat(),
    }


def _state(resp: falcon.Response, upload: Upload) -> None:
    resp.set_header("Upload-Offset", str(upload.received))
    if not upload.finished:
        resp.set_header("Upload-Expires", http_date(upload.expires_at))


def http_date(when: datetime) -> str:
    """An HTTP-date (RFC 9110), as Upload-Expires carries it."""
    return email.utils.format_datetime(when.astimezone(UTC), usegmt=True)


def _reader(req: falcon.Request) -> Any:
    """What reads the body: the bounded stream, or a chunked body's stream (ended by the server)."""
    if req.content_length is not None:
        return req.bounded_stream.read
    if req.env.get("wsgi.input_terminated"):
        return req.stream.read
    return lambda size: b""


def _has_body(req: falcon.Request) -> bool:
    """Whether the request sends bytes: a Content-Length over 0, or a chunked body."""
    chunked = "chunked" in (req.get_header("Transfer-Encoding") or "").lower()
    return bool(req.content_length) or (req.content_length is None and chunked)


def _content_type(req: falcon.Request) -> str:
    return (req.content_type or "").split(";")[0].strip().lower()


def _number(req: falcon.Request, name: str) -> int | None:
    """A header that must be a whole number of bytes, 0 or more; None when absent."""
    value = req.get_header(name)
    if value is None:
        return None
    if not _NUMBER.match(value.strip()):
        raise RequestRefused(f"{name} must be a whole number of bytes, 0 or more", field=name.lower().replace("-", "_"))
    return int(value)


def _checksum(req: falcon.Request) -> tuple[str, bytes] | None:
    """Upload-Checksum (`<algorithm> <base64 digest>`), or None."""
    value = req.get_header("Upload-Checksum")
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        discard_body(req)
        raise RequestRefused(
            f"Upload-Checksum names {algorithm[:20]!r}; this server checks {', '.join(CHECKSUM_ALGORITHMS)}",
            field="upload_checksum",
        )
    try:
        return algorithm, base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        discard_body(req)
        raise RequestRefused("Upload-Checksum's digest must be base64", field="upload_checksum") from None


def parse_metadata(header: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64(value)` pairs (a value may be absent), as text."""
    if header is None or not header.strip():
        return {}
    if len(header) > MAX_METADATA_CHARS:
        raise RequestRefused(f"Upload-Metadata is over {MAX_METADATA_CHARS} characters", field="upload_metadata")
    found: dict[str, str] = {}
    for pair in header.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not _KEY.match(key):
            raise RequestRefused(
                "Upload-Metadata must be comma-separated pairs of a key (printable ASCII, no space or comma) "
                "and its base64 value",
                field="upload_metadata",
            )
        if key in found:
            raise RequestRefused(f"Upload-Metadata names {key!r} twice", field="upload_metadata")
        try:
            value = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise RequestRefused(
                f"Upload-Metadata's value of {key!r} must be base64 of UTF-8 text", field="upload_metadata"
            ) from None
        if "\x00" in value:
            raise RequestRefused(f"Upload-Metadata's value of {key!r} holds a NUL character", field="upload_metadata")
        found[key] = value
    return found


def format_metadata(metadata: dict[str, str]) -> str:
    """Upload-Metadata as a HEAD answers it."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items())


class PresignResource:
    """POST /uploads/presign: a URL to PUT a file to, straight into the customer's S3, Azure or
    GCS area (not tus: one PUT by any HTTP client), and the blob_uri to enqueue then."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        signed = self.api.presign(req.context.access, read_json(req))
        resp.media = {
            "url": signed.url,
            "method": signed.method,
            "headers": signed.headers,
            "blob_uri": signed.blob_uri,
            "expires_at": signed.expires_at.isoformat(),
        }
