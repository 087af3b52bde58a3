"""The OpenAPI 3.1 document of the REST edge, served at /openapi.json.

Enumerations come from the code that enforces them (statuses, options, limits), so the
document cannot drift from them; tests check routes, methods and real responses against it.
"""

from __future__ import annotations

import copy
from typing import Any

from service.edges.api import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, STATUSES
from service.edges.rest.schemas import ref, schemas
from service.storage.rejects import DEFAULT_PAGE, ERRORS_COLUMN, MAX_PAGE

MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"
CSV = "text/csv"

_ERRORS = {
    400: "The request is refused; `field` names the offending field when there is one.",
    401: "No bearer token, or one that is not configured.",
    403: "The token may not act for that customer.",
    404: "No such job, or a job of a customer the token may not see.",
    409: "A conflict, named in the message: the Idempotency-Key was used before with another request "
    "body, or the job's state does not allow the change (cancelling a finished job; undoing a job that "
    "did not succeed, one whose history is past retention, or one later jobs changed: undo those first; "
    "replaying a job that has not ended or has no rejected rows).",
    413: f"The body is over {MAX_BODY_BYTES} bytes.",
    415: "The Content-Type is not JSON.",
    500: "An unexpected fault; the server logged it.",
    503: "A database the answer needs is not reachable right now (the app database; for rejects, undo and "
    "replay also the customer's); try again.",
}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response object with a JSON body."""
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*codes: int) -> dict[str, Any]:
    """Error responses for the given status codes, all with the one error shape."""
    responses = {str(code): _json(ref("Error"), _ERRORS[code]) for code in codes}
    if 401 in codes:
        bearer = {"description": "Always `Bearer`.", "schema": {"type": "string", "const": "Bearer"}}
        responses["401"]["headers"] = {"WWW-Authenticate": bearer}
    return responses


def _job_id() -> dict[str, Any]:
    return {
        "name": "job_id",
        "in": "path",
        "required": True,
        "description": "The job's id; anything that is not a UUID is answered 404.",
        "schema": {"type": "string"},
    }


def _location() -> dict[str, Any]:
    """The Location header of a 202: where to follow the job."""
    return {"description": "/jobs/<job_id>", "schema": {"type": "string", "pattern": "^/jobs/"}}


def _enqueue() -> dict[str, Any]:
    """POST /enqueue."""
    key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Replaying a key with the same body returns the first job (200); another body is 409.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    }
    return {
        "post": {
            "operationId": "enqueue",
            "summary": "Enqueue an import job.",
            "parameters": [key],
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("EnqueueRequest")}}},
            "responses": {
                "202": _json(ref("Enqueued"), "The job is queued.", headers={"Location": _location()}),
                "200": _json(ref("Job"), "A replay of an Idempotency-Key: the job it created."),
                **_errors(400, 401, 403, 409, 413, 415, 500, 503),
            },
        }
    }


def _list_parameters() -> list[dict[str, Any]]:
    """The query parameters of GET /jobs."""
    return [
        {"name": "customer_id", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "status", "in": "query", "required": False, "schema": {"type": "string", "enum": list(STATUSES)}},
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": DEFAULT_LIST_LIMIT},
        },
    ]


def _jobs() -> dict[str, Any]:
    """GET /jobs, GET /jobs/{job_id}, GET /jobs/{job_id}/logs."""
    return {
        "/jobs": {
            "get": {
                "operationId": "listJobs",
                "summary": "Jobs newest first, only of customers the token may see.",
                "parameters": _list_parameters(),
                "responses": {"200": _json(ref("JobList"), "The jobs."), **_errors(400, 401, 403, 500, 503)},
            }
        },
        "/jobs/{job_id}": {
            "get": {
                "operationId": "getJob",
                "summary": "One job: its status, counts, times, progress and source (scheme, compression, format, "
                "archive member).",
                "parameters": [_job_id()],
                "responses": {"200": _json(ref("Job"), "The job."), **_errors(401, 404, 500, 503)},
            }
        },
        "/jobs/{job_id}/logs": {
            "get": {
                "operationId": "getJobLogs",
                "summary": "The job's log lines, oldest first.",
                "parameters": [_job_id()],
                "responses": {"200": _json(ref("Logs"), "The log lines."), **_errors(401, 404, 500, 503)},
            }
        },
    }


def _page_parameters() -> list[dict[str, Any]]:
    """The query parameters of GET /jobs/{job_id}/rejects."""
    return [
        {
            "name": "after",
            "in": "query",
            "required": False,
            "description": "The source_row to page after: the `next` of the previous page (0: from the start).",
            "schema": {"type": "integer", "minimum": 0, "default": 0},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
        },
    ]


def _rejects() -> dict[str, Any]:
    """GET /jobs/{job_id}/rejects and GET /jobs/{job_id}/rejects.csv (SPEC 14)."""
    disposition = {
        "description": 'attachment; filename="<job_id>-rejects.csv"',
        "schema": {"type": "string", "pattern": '^attachment; filename="[0-9a-f-]{36}-rejects\\.csv"$'},
    }
    csv_file = {
        "description": "The job's rejected rows, UTF-8, streamed: the file's header columns in its order (a "
        f"key=value file: every key, first seen first) and a last column `{ERRORS_COLUMN}` (`field: message` "
        "joined by `; `), one line per row in source_row order. Fixed, it imports again; the "
        f"`{ERRORS_COLUMN}` column is ignored.",
        "content": {CSV: {"schema": {"type": "string"}}},
        "headers": {"Content-Disposition": disposition},
    }
    return {
        "/jobs/{job_id}/rejects": {
            "get": {
                "operationId": "listJobRejects",
                "summary": "The job's rejected rows, a page at a time, by source_row.",
                "parameters": [_job_id(), *_page_parameters()],
                "responses": {
                    "200": _json(ref("RejectPage"), "One page of rejected rows."),
                    **_errors(400, 401, 404, 500, 503),
                },
            }
        },
        "/jobs/{job_id}/rejects.csv": {
            "get": {
                "operationId": "getJobRejectsCsv",
                "summary": "The job's rejected rows as a CSV file to fix and import again.",
                "parameters": [_job_id()],
                "responses": {"200": csv_file, **_errors(401, 404, 500, 503)},
            }
        },
    }


def _change(operation_id: str, summary: str, done: str, pending: str) -> dict[str, Any]:
    """POST /jobs/{job_id}/cancel or /undo: no body needed (any is ignored), the job in the answer."""
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [_job_id()],
            "responses": {
                "200": _json(ref("Job"), done),
                "202": _json(ref("Job"), pending, headers={"Location": _location()}),
                **_errors(401, 404, 409, 500, 503),
            },
        }
    }


def _replay() -> dict[str, Any]:
    """POST /jobs/{job_id}/replay (SPEC 14): no body needed (any is ignored), a new job in the answer."""
    return {
        "post": {
            "operationId": "replayJobRejects",
            "summary": "Validate a finished job's stored rejected rows again, against the product schema as it "
            "is now, in a new job that writes those that pass with the original job's mode (a replace upserts). "
            "The new job's options are the original's plus `replay_of`, the original job's id. Nothing is read "
            "from the file.",
            "parameters": [_job_id()],
            "responses": {
                "200": _json(ref("Job"), "Asked again while its replay is queued, running or succeeded: that job."),
                "202": _json(ref("Enqueued"), "The new job is queued.", headers={"Location": _location()}),
                **_errors(401, 404, 409, 500, 503),
            },
        }
    }


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


def _uploads() -> dict[str, Any]:
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


def _presign() -> dict[str, Any]:
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


def _public(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    """A GET that needs no token."""
    return {"get": {"operationId": operation_id, "summary": summary, "security": [], "responses": responses}}


def _paths() -> dict[str, Any]:
    """Every route of service.rest."""
    return {
        "/enqueue": _enqueue(),
        **_jobs(),
        **_rejects(),
        "/jobs/{job_id}/cancel": _change(
            "cancelJob",
            "Cancel a queued or running job; it leaves what a failed job leaves. Cancelling a cancelled "
            "job again answers 200; any other finished job, 409.",
            "The job is cancelled.",
            "The job stops taking new work; a worker ends it `cancelled` within 10 s.",
        ),
        "/jobs/{job_id}/undo": _change(
            "undoJob",
            "Undo a succeeded job in one commit: its inserted rows are deleted, updated and deleted rows "
            "come back. Undoing an undone job again answers 200 and changes nothing.",
            "The job is undone.",
            "A big undo: a worker completes it, and the job's status then becomes `undone`.",
        ),
        "/jobs/{job_id}/replay": _replay(),
        **_uploads(),
        "/uploads/presign": _presign(),
        "/healthz": _public(
            "healthz", "The process is alive (no database involved).", {"200": _json(ref("Health"), "Alive.")}
        ),
        "/readyz": _public(
            "readyz",
            "The app database answers.",
            {"200": _json(ref("Ready"), "Ready."), **_errors(503)},
        ),
        "/openapi.json": _public(
            "openapi", "This document.", {"200": _json(ref("OpenApiDocument"), "The OpenAPI document.")}
        ),
        "/metrics": _public(
            "metrics",
            "Prometheus text: HTTP requests by route and status, finished jobs by product and status, rows "
            "by product and outcome, job durations, unfinished jobs, queue depth and oldest message age. "
            "Needs no token unless the metrics_token setting is set; then `Authorization: Bearer "
            "<metrics_token>` (API tokens do not work here).",
            {
                "200": {
                    "description": "The metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(401),
            },
        ),
        "/ui": _public(
            "statusPage",
            "The status page: one HTML page (no external assets) whose calls to this API carry the token "
            "typed into it.",
            {"200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
        ),
        "/ui/tus.min.js": _public(
            "statusPageTusClient",
            "The tus client (tus-js-client, MIT) the status page's upload form sends files with, served "
            "from here so that the page loads no external script; browsers may keep it an hour.",
            {"200": {"description": "The script.", "content": {"text/javascript": {"schema": {"type": "string"}}}}},
        ),
    }


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Import service",
        "version": "1.0.0",
        "description": "Enqueue imports of customer files and follow their jobs. Every error body is "
        '`{"error": {"status", "message", "field"}}`; a wrong method is 405 and an unknown path 404, '
        "with the same body.",
    },
    "security": [{"bearerAuth": []}],
    "paths": _paths(),
    "components": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        "schemas": schemas(),
    },
}


def document() -> dict[str, Any]:
    """A copy of the OpenAPI document (callers may not change the served one)."""
    return copy.deepcopy(_DOCUMENT)
