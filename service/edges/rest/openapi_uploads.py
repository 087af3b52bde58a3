"""The OpenAPI document's /uploads routes: tus 1.0 (creation, offsets, termination) and
POST /uploads/presign (SPEC 19)."""

from __future__ import annotations

from typing import Any

from service.edges.rest.openapi_parts import ERRORS as _ERRORS
from service.edges.rest.openapi_parts import JSON
from service.edges.rest.openapi_parts import json_answer as _json
from service.edges.rest.schemas import ref

_UPLOAD_ERRORS = {
    400: "A header is missing or malformed (Upload-Length, Upload-Offset, Upload-Metadata, Upload-Checksum); "
    "`field` names it.",
    401: _ERRORS[401],
    403: "The token may not act for the customer the metadata names.",
    404: "No such upload, one of a customer the token may not see, or one that expired or was deleted.",
    409: "Upload-Offset is not the upload's stored offset (HEAD tells it), or the upload is finished.",
    412: "Tus-Resumable is not 1.0.0 (the Tus-Version header names what this server speaks).",
    413: "The upload is longer than max_file_bytes, or the request's bytes pass its Upload-Length.",
    415: "The bytes of an upload come as application/offset+octet-stream.",
    423: "Another request is writing this upload right now; try again when it ends.",
    460: "Checksum Mismatch (tus): the request's bytes do not match Upload-Checksum; none were kept.",
    500: _ERRORS[500],
    503: _ERRORS[503],
}


def _upload_errors(*codes: int) -> dict[str, Any]:
    """Error responses of /uploads, the one error shape (tus clients read only the status)."""
    return {str(code): _json(ref("Error"), _UPLOAD_ERRORS[code]) for code in codes}


def _tus_header(name: str, description: str, pattern: str | None = None, required: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "header", "required": required, "description": description, "schema": schema}


def _tus_answer(description: str, *headers: str) -> dict[str, Any]:
    """A tus answer without a body, with these headers."""
    known = {
        "Tus-Resumable": "Always 1.0.0.",
        "Upload-Offset": "The bytes of the upload stored so far.",
        "Upload-Length": "The upload's length in bytes.",
        "Upload-Expires": "When an unfinished upload is deleted (an HTTP-date).",
        "Upload-Metadata": "The metadata given at creation (key base64-value pairs).",
        "Tus-Version": "1.0.0",
        "Tus-Extension": "creation,creation-with-upload,termination,expiration,checksum",
        "Tus-Max-Size": "max_file_bytes.",
        "Tus-Checksum-Algorithm": "The algorithms Upload-Checksum may name.",
    }
    optional = ("Upload-Expires", "Upload-Metadata")  # only while unfinished / when metadata was given
    return {
        "description": description,
        "headers": {
            name: {"description": known[name], "required": name not in optional, "schema": {"type": "string"}}
            for name in headers
        },
    }


def uploads() -> dict[str, Any]:
    """tus 1.0.0 at /uploads (SPEC 19)."""
    version = _tus_header("Tus-Resumable", "Must be 1.0.0.", "^1\\.0\\.0$", required=True)
    offset_stream = {"application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    checksum = _tus_header("Upload-Checksum", "`<algorithm> <base64 digest>` of this request's bytes (sha256...).")
    upload_id = {
        "name": "upload_id",
        "in": "path",
        "required": True,
        "description": "The upload's id (the last part of its Location); anything else is answered 404.",
        "schema": {"type": "string"},
    }
    capabilities = _tus_answer(
        "What this server offers.", "Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm"
    )
    return {
        "/uploads": {
            "options": {
                "operationId": "uploadOptions",
                "summary": "tus: the server's version, extensions and limits (no token needed).",
                "security": [],
                "responses": {"204": capabilities},
            },
            "post": {
                "operationId": "createUpload",
                "summary": "tus creation (and creation-with-upload): a new upload for one customer.",
                "description": "Upload-Metadata may name `filename` and, for a token of several customers, "
                "`customer_id`. Bytes in the body are stored at once.",
                "parameters": [
                    version,
                    _tus_header("Upload-Length", "The file's size in bytes.", "^[0-9]{1,19}$", required=True),
                    _tus_header("Upload-Metadata", "Comma-separated `key base64(value)` pairs."),
                    checksum,
                ],
                "requestBody": {"required": False, "content": offset_stream},
                "responses": {
                    "201": _json(
                        ref("Upload"),
                        "The upload exists; its URL is in Location.",
                        headers={
                            "Location": {"description": "/uploads/<upload_id>", "schema": {"type": "string"}},
                            "Upload-Offset": {"description": "Bytes stored so far.", "schema": {"type": "string"}},
                        },
                    ),
                    **_upload_errors(400, 401, 403, 412, 413, 415, 460, 500, 503),
                },
            },
        },
        "/uploads/{upload_id}": {
            "options": {
                "operationId": "uploadOptionsOfOne",
                "summary": "tus: as OPTIONS /uploads.",
                "security": [],
                "parameters": [upload_id],
                "responses": {"204": capabilities},
            },
            "head": {
                "operationId": "uploadOffset",
                "summary": "tus: the upload's stored offset, so a client resumes there.",
                "parameters": [upload_id, version],
                "responses": {
                    "200": _tus_answer(
                        "The upload.", "Upload-Offset", "Upload-Length", "Upload-Expires", "Upload-Metadata"
                    ),
                    **_upload_errors(401, 404, 412, 500, 503),
                },
            },
            "patch": {
                "operationId": "uploadBytes",
                "summary": "tus: store the body's bytes at Upload-Offset.",
                "parameters": [
                    upload_id,
                    version,
                    _tus_header("Upload-Offset", "Where these bytes go.", "^[0-9]{1,19}$", required=True),
                    checksum,
                ],
                "requestBody": {"required": True, "content": offset_stream},
                "responses": {
                    "204": _tus_answer("Stored.", "Upload-Offset", "Upload-Expires"),
                    **_upload_errors(400, 401, 404, 409, 412, 413, 415, 423, 460, 500, 503),
                },
            },
            "delete": {
                "operationId": "deleteUpload",
                "summary": "tus termination: delete the upload and its bytes.",
                "parameters": [upload_id, version],
                "responses": {"204": _tus_answer("Deleted."), **_upload_errors(401, 404, 412, 500, 503)},
            },
        },
    }


def presign() -> dict[str, Any]:
    """POST /uploads/presign (SPEC 19)."""
    errors = {
        400: "The body is refused (`field` names what): no filename, a bad expires_in, an unknown field; or the "
        "customer's uploads go to the service itself (use tus at /uploads).",
        401: _ERRORS[401],
        403: _ERRORS[403],
        413: _ERRORS[413],
        415: _ERRORS[415],
        500: _ERRORS[500],
        503: "The customer's store cannot sign a URL (its credentials), or cannot be reached; the message names "
        "the store, never a credential.",
    }
    return {
        "post": {
            "operationId": "presignUpload",
            "summary": "A URL to PUT a file to, straight into the customer's S3, Azure or GCS area, valid at most an "
            "hour; enqueue its blob_uri once the file is there.",
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("PresignRequest")}}},
            "responses": {
                "200": _json(ref("Presigned"), "Where and how to PUT the file, and what to enqueue."),
                **{str(code): _json(ref("Error"), text) for code, text in errors.items()},
            },
        }
    }
