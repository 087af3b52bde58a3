"""The OpenAPI 3.1 document of the REST edge, served at /openapi.json.

Enumerations come from the code that enforces them (statuses, options, limits), so the
document cannot drift from them; tests check routes, methods and real responses against it.
"""

from __future__ import annotations

import copy
from typing import Any

from service.edges.api import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, STATUSES
from service.edges.rest.openapi_parts import CSV, JSON, MAX_BODY_BYTES  # noqa: F401  (bodies.py reads MAX_BODY_BYTES here)
from service.edges.rest.openapi_parts import error_answers as _errors
from service.edges.rest.openapi_parts import json_answer as _json
from service.edges.rest.openapi_uploads import presign as _presign
from service.edges.rest.openapi_uploads import uploads as _uploads
from service.edges.rest.schemas import ref, schemas
from service.storage.feeds import FILE_STATES
from service.storage.rejects import DEFAULT_PAGE, ERRORS_COLUMN, MAX_PAGE


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


def _list_parameters(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The query parameters of a listing (GET /jobs, GET /feeds): customer_id, these, limit."""
    return [
        {"name": "customer_id", "in": "query", "required": False, "schema": {"type": "string"}},
        *extra,
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
                "parameters": _list_parameters(
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": list(STATUSES)},
                    }
                ),
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


_FEED_ERRORS = {
    400: "The body is refused; `field` names the offending field (`prefix_uri` outside the customer's area, "
    "`schedule.every_seconds`, `after_success.move_to`, `options.mode`...).",
    404: "No such feed, or a feed of a customer the token may not see.",
    409: "A run of the feed is in progress (the workers' or another call's); try again when it ends.",
}


def _feed_operation(
    operation_id: str,
    summary: str,
    answer: dict[str, Any],
    errors: tuple[int, ...],
    *,
    body: str | None = None,
    version: bool = False,
    query: tuple[dict[str, Any], ...] = (),
    texts: dict[int, str] | None = None,
) -> dict[str, Any]:
    """An operation on one feed (on one of its files' version): its answer, its errors described for feeds."""
    parameters = [
        {
            "name": "feed_id",
            "in": "path",
            "required": True,
            "description": "The feed's id; anything that is not a UUID is answered 404.",
            "schema": {"type": "string"},
        }
    ]
    if version:
        parameters.append(
            {
                "name": "version",
                "in": "path",
                "required": True,
                "description": "The `version` of one of the feed's files (in its view's `recent`).",
                "schema": {"type": "string"},
            }
        )
    parameters += query
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "parameters": parameters}
    if body:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": ref(body)}}}
    operation["responses"] = {**answer, **_errors(*errors, texts={**_FEED_ERRORS, **(texts or {})})}
    return operation


def _feeds() -> dict[str, Any]:
    """/feeds, /feeds/{feed_id}, its run, its files and their retry (SPEC 20)."""
    where = {"description": "/feeds/<feed_id>", "schema": {"type": "string", "pattern": "^/feeds/[0-9a-f-]{36}$"}}
    return {
        "/feeds": {
            "get": {
                "operationId": "listFeeds",
                "summary": "Feeds oldest first, only of customers the token may see.",
                "parameters": _list_parameters(),
                "responses": {
                    "200": _json(ref("FeedList"), "The feeds (without their files)."),
                    **_errors(
                        400, 401, 403, 500, 503, texts={400: "customer_id or limit is malformed; `field` names it."}
                    ),
                },
            },
            "post": {
                "operationId": "createFeed",
                "summary": "Watch a prefix of the customer's area and import each new file there once per version "
                "(its key with its ETag, generation or size and mtime), in key order. The first run is due at once.",
                "requestBody": {"required": True, "content": {JSON: {"schema": ref("FeedRequest")}}},
                "responses": {
                    "201": _json(ref("Feed"), "The feed.", headers={"Location": where}),
                    **_errors(400, 401, 403, 413, 415, 500, 503, texts=_FEED_ERRORS),
                },
            },
        },
        "/feeds/{feed_id}": {
            "get": _feed_operation(
                "getFeed",
                "One feed: its definition, its last and next run, its files' counts and its latest files with "
                "their jobs.",
                {"200": _json(ref("FeedDetail"), "The feed.")},
                (401, 404, 500, 503),
            ),
            "patch": _feed_operation(
                "updateFeed",
                "Pause or resume the feed, or change its schedule, options, pattern, after_success or "
                "expect_every_hours (the fields given); a new schedule, or a resume, sets its next run from now.",
                {"200": _json(ref("Feed"), "The feed as it now is.")},
                (400, 401, 404, 413, 415, 500, 503),
                body="FeedChange",
                texts={400: _FEED_ERRORS[400] + " customer_id, product_type and prefix_uri cannot change."},
            ),
            "delete": _feed_operation(
                "deleteFeed",
                "Delete the feed and its ledger; its jobs, and the files under its prefix, stay.",
                {"204": {"description": "Deleted."}},
                (401, 404, 500, 503),
            ),
        },
        "/feeds/{feed_id}/run": {
            "post": _feed_operation(
                "runFeed",
                "Run the feed now, paused or not; the answer comes when the run ends. No body needed.",
                {"200": _json(ref("FeedRun"), "What the run found and enqueued, and the feed as it then is.")},
                (401, 404, 409, 500, 503),
            )
        },
        "/feeds/{feed_id}/files": {
            "get": _feed_operation(
                "listFeedFiles",
                "The feed's files (each version it has seen) newest first, a page at a time, with their jobs: "
                "all of them, or only those imported, failed (a retry's candidates) or pending.",
                {"200": _json(ref("FeedFilePage"), "A page of files; `next` is the `after` of the next page.")},
                (400, 401, 404, 500, 503),
                query=(
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": list(FILE_STATES)},
                    },
                    *_list_parameters()[1:],
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "The `next` of the page before.",
                        "schema": {"type": "string"},
                    },
                ),
                texts={
                    400: "state, limit or after is malformed (after: not a version of this feed); `field` names it."
                },
            )
        },
        "/feeds/{feed_id}/files/{version}/retry": {
            "post": _feed_operation(
                "retryFeedFile",
                "Import a failed file of the feed again, in a new job (a feed never retries on its own). No body "
                "needed.",
                {"202": _json(ref("Enqueued"), "The new job is queued.", headers={"Location": _location()})},
                (400, 401, 404, 409, 500, 503),
                version=True,
                texts={
                    400: "The file is refused as an enqueue would refuse it now (`field`: version; gone, too big...).",
                    409: "The file's job has not failed or been cancelled, or another retry came first.",
                    404: "No such feed, or file of the feed, or a feed of a customer the token may not see.",
                    503: "The app database, or the store holding the file, cannot be reached right now; try again.",
                },
            )
        },
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
        **_feeds(),
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
